"""Reading instruction data from a channel folder (standard library only).

Two row shapes, one JSON object per line in `*.jsonl` files:
- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
- prompt/completion: `{"prompt": "...", "completion": "..."}`

The rules are `llm_sft.datacheck`'s, the module the launch function and the CLI check data with
too (same messages, same line numbers). Everything is checked before any model is loaded, so
bad data fails a job in seconds with the file and line in the FailureReason instead of training
on garbage; what only looks wrong (repeated rows, empty user turns) is logged as a warning.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft.datacheck import (
    ROLE_ORDER,
    ROLES,
    DataRuleError,
    Example,
    JsonlCheck,
    Message,
    RowIndex,
    file_warnings,
    is_data_file,
)
from llm_sft.datacheck import parse_row as _parse_row
from llm_sft.errors import DataError

__all__ = [
    "ROLES",
    "ROLE_ORDER",
    "ChannelData",
    "Example",
    "Message",
    "channel_files",
    "load_channel",
    "measure_tokens",
    "parse_row",
    "read_jsonl",
    "split_validation",
]

logger = logging.getLogger(__name__)

#: Bytes read at a time: one line at a time is held beyond the rows kept.
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ChannelData:
    name: str
    directory: Path
    files: tuple[Path, ...]
    file_sha256: dict[str, str]
    sha256: str  # over (relative path, file sha256) pairs: the channel's identity
    examples: tuple[Example, ...]

    @property
    def rows(self) -> int:
        return len(self.examples)

    def identity(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "rows": self.rows,
            "files": {name: digest for name, digest in sorted(self.file_sha256.items())},
        }


def parse_row(row: object, where: str) -> Example:
    """Validate one decoded JSON value; `where` is `file:line`."""
    try:
        return _parse_row(row, where)
    except DataRuleError as problem:
        raise DataError(str(problem)) from None


def read_jsonl(path: Path, index: RowIndex | None = None) -> tuple[list[Example], str]:
    """Validated examples of one file and the file's sha256; the first error raises DataError.
    ``index`` finds rows repeated across the files of a channel."""
    check = JsonlCheck(str(path), fail_fast=True, keep=True, index=index)
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                check.feed(chunk)
        report = check.close()
    except DataRuleError as problem:
        raise DataError(str(problem)) from None
    for warning in file_warnings(report):
        logger.warning("%s", warning)
    assert check.examples is not None
    assert report.sha256 is not None
    return check.examples, report.sha256


def channel_files(name: str, directory: Path) -> list[Path]:
    if directory.is_file() and directory.suffix == ".jsonl":  # a single file, on a laptop
        return [directory]
    if not directory.is_dir():
        raise DataError(f"channel '{name}': folder {directory} does not exist")
    files = sorted(
        p
        for p in directory.rglob("*.jsonl")
        if p.is_file() and is_data_file(p.relative_to(directory).as_posix())
    )
    if not files:
        present = sorted(p.name for p in directory.iterdir())[:5]
        raise DataError(
            f"channel '{name}': no .jsonl files in {directory}"
            + (f" (found: {', '.join(present)})" if present else " (the folder is empty)")
        )
    return files


def load_channel(name: str, directory: Path) -> ChannelData:
    """All `*.jsonl` files under `directory` (sorted, recursively), or that one file; validated."""
    directory = Path(directory)
    files = channel_files(name, directory)
    examples: list[Example] = []
    hashes: dict[str, str] = {}
    index = RowIndex()  # rows repeated anywhere in the channel
    for path in files:
        rows, digest = read_jsonl(path, index)
        examples.extend(rows)
        root = directory if directory.is_dir() else directory.parent
        hashes[path.relative_to(root).as_posix()] = digest
    combined = hashlib.sha256()
    for relative, digest in sorted(hashes.items()):
        combined.update(f"{relative}\0{digest}\n".encode())
    return ChannelData(
        name=name,
        directory=directory,
        files=tuple(files),
        file_sha256=hashes,
        sha256=combined.hexdigest(),
        examples=tuple(examples),
    )


def split_validation(
    examples: Sequence[Example], share: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic split of `share` of the rows into a validation set (at least one row)."""
    if share <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)  # noqa: S311 - reproducible split, not crypto
    count = min(len(examples) - 1, max(1, round(len(examples) * share)))
    held = set(order[:count])
    train = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    return train, validation


def measure_tokens(tokenizer: Any, example: Example, max_seq_length: int) -> tuple[int, int]:
    """The example's full token length as the training job encodes it, and how many trainable
    tokens it keeps within ``max_seq_length`` (0: the job drops it)."""
    from llm_sft.encoding import IGNORE_INDEX, encode_example

    encoded = encode_example(tokenizer, example, max_seq_length=2**62)
    # encode_example(..., max_seq_length) keeps labels[:max_seq_length] with labels[0] ignored.
    within = encoded.labels[1:max_seq_length]
    return len(encoded.input_ids), sum(1 for label in within if label != IGNORE_INDEX)
