"""Run files: YAML or JSON documents holding a run request (or a deploy request).

Whatever the file holds, the answer is the document or one ``CliError`` (exit code 2) that
names the file and what is wrong with it: not text (binary, not UTF-8), not YAML/JSON (with the
line), too large or too deeply nested to be a request, a key given twice, or the request's own
problems, each naming its field. Long values are elided in messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from finetune.backends.common import elide
from finetune.errors import EXIT_USAGE, CliError
from runspec.request import (
    RunRequest,
    RunRequestError,
    is_deploy_request,
    parse_deploy_request,
    parse_run_request,
)

__all__ = ["MAX_DEPTH", "MAX_RUN_FILE_BYTES", "load_run_file"]

_SCHEMA_HINT = "see docs/run-request.schema.json and examples/runs/"
#: Step Functions refuses an execution input over 256 KiB: no larger request can ever start.
MAX_RUN_FILE_BYTES = 256 * 1024
#: A run request nests four levels (request > hyperparameters > lora_target_modules > name).
MAX_DEPTH = 8
#: Values a run request can hold, with room to spare (YAML aliases count each time they are used).
_MAX_VALUES = 10_000


def load_run_file(path: Path) -> tuple[dict[str, Any], RunRequest | None]:
    """The file's document and, for a run request, its validated form. Every problem is a
    CliError with exit code 2 whose message starts with the file name."""
    document = _read_document(path)
    try:
        if is_deploy_request(document):
            parse_deploy_request(document)
            return dict(document), None
        request = parse_run_request(document)
    except RunRequestError as error:
        raise CliError(
            f"{path}: {'; '.join(elide(problem) for problem in error.problems)}",
            hint=_SCHEMA_HINT,
            exit_code=EXIT_USAGE,
        ) from None
    return dict(document), request


def _read_document(path: Path) -> Any:
    def refuse(message: str, hint: str | None = _SCHEMA_HINT) -> CliError:
        return CliError(f"{path}: {message}", hint=hint, exit_code=EXIT_USAGE)

    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RUN_FILE_BYTES + 1)
    except OSError as error:
        raise CliError(f"{path}: {error.strerror}", exit_code=EXIT_USAGE) from None
    if len(data) > MAX_RUN_FILE_BYTES:
        raise refuse(
            f"larger than {MAX_RUN_FILE_BYTES // 1024} KiB; a run request is a few hundred "
            "bytes (Step Functions takes at most 256 KiB of input)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(
            f"not a text file (byte 0x{data[error.start]:02x} at offset {error.start} is not "
            "UTF-8); a run file is YAML or JSON text"
        ) from None
    if "\x00" in text:
        raise refuse(f"not a text file (NUL byte at offset {text.index(chr(0))})")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        document = (
            json.loads(text, object_pairs_hook=_unique_keys)
            if kind == "JSON"
            else yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        )
    except RecursionError:
        raise refuse(f"nested more than {MAX_DEPTH} levels deep; not a run request") from None
    except _DuplicateKeyError as error:
        raise refuse(f"{elide(error.key)}: given twice{error.where}") from None
    except (ValueError, yaml.YAMLError) as error:
        line = _line_of(error)
        where = f"{path}:{line}" if line else str(path)
        problem = getattr(error, "problem", None) or getattr(error, "msg", None) or str(error)
        detail = f" ({elide(str(problem), 120)})" if problem else ""
        raise CliError(
            f"{where}: not valid {kind}{detail}", hint=_SCHEMA_HINT, exit_code=EXIT_USAGE
        ) from None
    _check_shape(document, refuse)
    return {} if document is None else document


def _check_shape(document: Any, refuse: Any) -> None:
    """Refuse documents no request can be: deeper than MAX_DEPTH or with more than _MAX_VALUES
    values (which YAML aliases make possible in a few bytes)."""
    budget = _MAX_VALUES
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise refuse(f"holds more than {_MAX_VALUES:,} values; not a run request")
        if depth > MAX_DEPTH:
            raise refuse(f"nested more than {MAX_DEPTH} levels deep; not a run request")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: object, line: int | None = None) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = str(key)
        self.where = f" (line {line})" if line else ""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(key)
        document[key] = value
    return document


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base loader reports it
                break
            if duplicate:
                raise _DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_of(error: Exception) -> int | None:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    return getattr(error, "lineno", None)
