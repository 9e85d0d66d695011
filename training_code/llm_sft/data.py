"""Reading and validating instruction data from a channel folder (standard library only).

Two row shapes, one JSON object per line in `*.jsonl` files:
- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
- prompt/completion: `{"prompt": "...", "completion": "..."}`

Everything is checked before any model is loaded, so bad data fails a job in seconds with the
file and line in the FailureReason instead of training on garbage.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_sft.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One validated row. Chat rows have `messages`; prompt/completion rows the two strings."""

    source: str  # "file.jsonl:LINE", for error messages
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    completion: str | None = None

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


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


def _where(path: Path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _parse_messages(value: object, where: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    messages: list[Message] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{where}: messages[{index}] must be an object")
        if "role" not in item or "content" not in item:
            missing = "role" if "role" not in item else "content"
            raise DataError(f"{where}: messages[{index}] is missing field '{missing}'")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise DataError(
                f"{where}: messages[{index}] has unknown role {role!r}"
                f" (expected one of {', '.join(ROLES)})"
            )
        if not isinstance(content, str):
            raise DataError(
                f"{where}: messages[{index}] content must be a string, got {type(content).__name__}"
            )
        if role == "assistant" and not content.strip():
            raise DataError(f"{where}: messages[{index}] is an assistant turn with empty content")
        messages.append(Message(role=role, content=content))
    if not any(m.role == "assistant" for m in messages):
        raise DataError(f"{where}: conversation has no assistant turn (nothing to learn)")
    _check_role_order(messages, where)
    return tuple(messages)


#: The turn order chat templates assume (most raise on anything else, some silently drop turns).
ROLE_ORDER = (
    "a conversation is an optional system turn, then user and assistant turns alternating, "
    "starting with user and ending with assistant"
)


def _check_role_order(messages: Sequence[Message], where: str) -> None:
    expected = "user"
    for index, message in enumerate(messages):
        if message.role == "system" and index == 0:
            continue
        if message.role != expected:
            after = f"after a {messages[index - 1].role} turn" if index else "first"
            raise DataError(
                f"{where}: messages[{index}] is a {message.role} turn {after}, expected {expected}"
                f"; {ROLE_ORDER}"
            )
        expected = "assistant" if expected == "user" else "user"
    if messages[-1].role != "assistant":
        raise DataError(
            f"{where}: messages[{len(messages) - 1}] is a {messages[-1].role} turn at the end"
            f"; {ROLE_ORDER}"
        )


def parse_row(row: object, where: str) -> Example:
    """Validate one decoded JSON value; `where` is `file:line`."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    has_chat = "messages" in row
    has_pc = "prompt" in row or "completion" in row
    if has_chat and has_pc:
        raise DataError(f"{where}: row has both 'messages' and 'prompt'/'completion'; use one")
    if has_chat:
        return Example(source=where, messages=_parse_messages(row["messages"], where))
    if has_pc:
        for key in ("prompt", "completion"):
            if key not in row:
                raise DataError(f"{where}: missing field '{key}'")
            if not isinstance(row[key], str):
                raise DataError(
                    f"{where}: '{key}' must be a string, got {type(row[key]).__name__}"
                    " (for conversations use 'messages')"
                )
        if not row["completion"].strip():
            raise DataError(f"{where}: 'completion' is empty (nothing to learn)")
        return Example(source=where, prompt=row["prompt"], completion=row["completion"])
    raise DataError(f"{where}: missing field: expected 'messages', or 'prompt' and 'completion'")


def read_jsonl(path: Path) -> tuple[list[Example], str]:
    """Validated examples of one file and the file's sha256."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    examples: list[Example] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = _where(path, number)
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{where}: not valid UTF-8") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text:
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: malformed JSON ({error.msg} at column {error.colno})"
            ) from None
        examples.append(parse_row(row, where))
    if not examples:
        raise DataError(f"{path}: file is empty (no JSON lines)")
    return examples, digest


def channel_files(name: str, directory: Path) -> list[Path]:
    if directory.is_file() and directory.suffix == ".jsonl":  # a single file, on a laptop
        return [directory]
    if not directory.is_dir():
        raise DataError(f"channel '{name}': folder {directory} does not exist")
    files = sorted(
        p
        for p in directory.rglob("*.jsonl")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
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
    for path in files:
        rows, digest = read_jsonl(path)
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
