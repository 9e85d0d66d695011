"""Run files: YAML or JSON documents holding a run request (or a deploy request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from finetune.errors import EXIT_USAGE, CliError
from runspec.request import (
    RunRequest,
    RunRequestError,
    is_deploy_request,
    parse_deploy_request,
    parse_run_request,
)

__all__ = ["load_run_file"]

_SCHEMA_HINT = "see docs/run-request.schema.json and examples/runs/"


def load_run_file(path: Path) -> tuple[dict[str, Any], RunRequest | None]:
    """The file's document and, for a run request, its validated form. Every problem is a
    CliError with exit code 2 whose message starts with the file name."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"{path}: {error.strerror}", exit_code=EXIT_USAGE) from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        line = _line_of(error)
        where = f"{path}:{line}" if line else str(path)
        raise CliError(
            f"{where}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}",
            hint=_SCHEMA_HINT,
            exit_code=EXIT_USAGE,
        ) from None
    document = {} if document is None else document
    try:
        if is_deploy_request(document):
            parse_deploy_request(document)
            return dict(document), None
        request = parse_run_request(document)
    except RunRequestError as error:
        raise CliError(
            f"{path}: {'; '.join(error.problems)}", hint=_SCHEMA_HINT, exit_code=EXIT_USAGE
        ) from None
    return dict(document), request


def _line_of(error: Exception) -> int | None:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    return getattr(error, "lineno", None)
