"""The rules a training dataset must follow, in one module that every place checking data imports.

Two row shapes, one JSON object per line of a ``.jsonl`` file:
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``: an
  optional system turn, then user and assistant turns alternating, ending with assistant;
- prompt/completion: ``{"prompt": "...", "completion": "..."}``.

Errors (the training job refuses the data): a line that is not UTF-8, not JSON, longer than
``MAX_LINE_BYTES``, not an object of one of the two shapes, an unknown role, turns out of order,
an assistant turn or completion that is empty (nothing to learn), text the tokenizer cannot
encode (an unpaired UTF-16 surrogate), a file with no rows. Warnings (the data trains, but
probably not as meant): a row repeated, an empty user/system turn or prompt, chat and
prompt/completion rows mixed in one file, validation rows that also are training rows.

One module, three places, the same messages and line numbers:
- the training job (``llm_sft.data`` reads channel folders with it, and fails on the first
  error with the file and line in the FailureReason);
- the launch function (``launch_run.datacheck`` streams the pinned dataset objects through it
  before any training job starts);
- the CLI (``finetune data check`` / ``upload``, and local runs).

Why it lives here and how the Lambda gets it. The training code ships alone: the image build
copies ``training_code/``, script mode uploads the same folder; whatever it imports must be in
it. The Lambda asset is ``lambdas/``. Simpler layouts, and why not: a copy under ``lambdas/``
drifts (the issue this module closes); a symlink breaks on Windows checkouts and makes one file
two modules (mypy refuses it, the CLI would load the rules twice); moving the rules to
``lambdas/`` makes the training image depend on the Lambda folder; a package of its own needs a
build, a layer and versions kept in step. So the rules stay in the code that can never run
without them, with no import beyond the standard library (none from ``llm_sft`` either: nothing
else of the training code is in the Lambda), and ``stacks/components/project_function.py``
assembles the function asset as ``lambdas/`` plus this file as ``llm_sft/datacheck.py``: every
runtime imports it under the same name, ``llm_sft.datacheck``, and the asset hash is the
assembled folder's, so a rule change redeploys the functions.

Streaming: ``JsonlCheck`` takes a file as chunks of bytes in order (or windows of a large
object with their byte offsets) and keeps one line in memory at a time, plus 8-byte digests of
the rows for the duplicate and overlap checks (``RowIndex``, bounded by ``INDEX_ROWS``).

Over 400 lines as one idea: the data rules, every one with its message, imported by the
job, the launch function and the CLI so they can never disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INDEX_ROWS",
    "MAX_LINE_BYTES",
    "ROLES",
    "ROLE_ORDER",
    "DataRuleError",
    "Example",
    "FileReport",
    "JsonlCheck",
    "Message",
    "RowIndex",
    "TokenStats",
    "is_data_file",
    "parse_row",
]

ROLES = ("system", "user", "assistant")

#: The turn order chat templates assume (most raise on anything else, some silently drop turns).
ROLE_ORDER = (
    "a conversation is an optional system turn, then user and assistant turns alternating, "
    "starting with user and ending with assistant"
)

#: A row longer than this is refused: no training example is that long (131,072 tokens, the
#: longest max_seq_length, are ~0.5 MB of text), and every reader holds one line in memory.
MAX_LINE_BYTES = 8 * 1024 * 1024

#: Rows whose digests are kept for the duplicate and overlap checks (~100 bytes each in CPython:
#: at most ~200 MB). Rows beyond it are still checked, only not compared.
INDEX_ROWS = 2_000_000

#: Problems of each kind kept per file for the report (all are counted).
REPORTED = 20


class DataRuleError(ValueError):
    """A rule a row or file breaks. ``where`` is ``file:line`` (or the file, or the row's byte
    offset in a sampled window); ``message`` the rule."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One validated row. Chat rows have ``messages``; prompt/completion rows the two strings."""

    source: str  # "file.jsonl:LINE", for error messages
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    completion: str | None = None

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


def is_data_file(relative_path: str) -> bool:
    """Whether a file of a channel folder (path relative to the channel) is read as data:
    ``*.jsonl``, not hidden and not in a hidden folder."""
    parts = relative_path.split("/")
    return relative_path.endswith(".jsonl") and not any(part.startswith(".") for part in parts)


# -- one row ----------------------------------------------------------------------------------


def _encodable(text: str, where: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataRuleError(
            where,
            f"{what} holds an unpaired UTF-16 surrogate (\\u{ord(text[error.start]):04x} at "
            f"character {error.start + 1}) that no tokenizer can encode",
        ) from None


def _parse_messages(value: object, where: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise DataRuleError(where, "'messages' must be a non-empty list")
    messages: list[Message] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataRuleError(where, f"messages[{index}] must be an object")
        if "role" not in item or "content" not in item:
            missing = "role" if "role" not in item else "content"
            raise DataRuleError(where, f"messages[{index}] is missing field '{missing}'")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise DataRuleError(
                where,
                f"messages[{index}] has unknown role {role!r} (expected one of {', '.join(ROLES)})",
            )
        if not isinstance(content, str):
            raise DataRuleError(
                where,
                f"messages[{index}] content must be a string, got {type(content).__name__}",
            )
        if role == "assistant" and not content.strip():
            raise DataRuleError(where, f"messages[{index}] is an assistant turn with empty content")
        _encodable(content, where, f"messages[{index}] content")
        messages.append(Message(role=role, content=content))
    if not any(m.role == "assistant" for m in messages):
        raise DataRuleError(where, "conversation has no assistant turn (nothing to learn)")
    _check_role_order(messages, where)
    return tuple(messages)


def _check_role_order(messages: Sequence[Message], where: str) -> None:
    expected = "user"
    for index, message in enumerate(messages):
        if message.role == "system" and index == 0:
            continue
        if message.role != expected:
            after = f"after a {messages[index - 1].role} turn" if index else "first"
            raise DataRuleError(
                where,
                f"messages[{index}] is a {message.role} turn {after}, expected {expected}"
                f"; {ROLE_ORDER}",
            )
        expected = "assistant" if expected == "user" else "user"
    if messages[-1].role != "assistant":
        raise DataRuleError(
            where,
            f"messages[{len(messages) - 1}] is a {messages[-1].role} turn at the end; {ROLE_ORDER}",
        )


def parse_row(row: object, where: str) -> Example:
    """Validate one decoded JSON value; ``where`` is ``file:line``. Raises DataRuleError."""
    if not isinstance(row, dict):
        raise DataRuleError(where, f"expected a JSON object, got {type(row).__name__}")
    has_chat = "messages" in row
    has_pc = "prompt" in row or "completion" in row
    if has_chat and has_pc:
        raise DataRuleError(where, "row has both 'messages' and 'prompt'/'completion'; use one")
    if has_chat:
        return Example(source=where, messages=_parse_messages(row["messages"], where))
    if has_pc:
        for key in ("prompt", "completion"):
            if key not in row:
                raise DataRuleError(where, f"missing field '{key}'")
            if not isinstance(row[key], str):
                raise DataRuleError(
                    where,
                    f"'{key}' must be a string, got {type(row[key]).__name__}"
                    " (for conversations use 'messages')",
                )
            _encodable(row[key], where, f"'{key}'")
        if not row["completion"].strip():
            raise DataRuleError(where, "'completion' is empty (nothing to learn)")
        return Example(source=where, prompt=row["prompt"], completion=row["completion"])
    raise DataRuleError(where, "missing field: expected 'messages', or 'prompt' and 'completion'")


def _empty_turns(example: Example) -> list[str]:
    """What is empty but allowed (a warning): user or system turns, the prompt."""
    if example.is_chat:
        return [
            f"messages[{index}] is a {m.role} turn with empty content"
            for index, m in enumerate(example.messages)
            if m.role != "assistant" and not m.content.strip()
        ]
    return ["'prompt' is empty"] if not (example.prompt or "").strip() else []


def _digest(example: Example) -> int:
    """8 bytes that identify a row's content (whatever its JSON spelling: key order, escapes)."""
    digest = hashlib.blake2b(digest_size=8)
    if example.is_chat:
        for message in example.messages:
            digest.update(message.role.encode())
            digest.update(b"\x00")
            digest.update(message.content.encode())
            digest.update(b"\x01")
    else:
        digest.update(b"\x02")
        digest.update((example.prompt or "").encode())
        digest.update(b"\x00")
        digest.update((example.completion or "").encode())
    return int.from_bytes(digest.digest(), "big")


# -- duplicates and overlap -------------------------------------------------------------------


@dataclass
class RowIndex:
    """Digests of the rows seen, with where each was first seen; bounded by ``limit`` rows."""

    limit: int = INDEX_ROWS
    files: list[str] = field(default_factory=list)
    _first: dict[int, int] = field(default_factory=dict)  # digest -> file number << 40 | line
    full: bool = False

    def file_number(self, name: str) -> int:
        self.files.append(name)
        return len(self.files) - 1

    def find(self, digest: int) -> str | None:
        """Where a row with this digest was first seen (``file:line``), or None."""
        found = self._first.get(digest)
        if found is None:
            return None
        name, line = self.files[found >> 40], found & ((1 << 40) - 1)
        return f"{name}:{line}" if line else f"{name} (a sampled row)"

    def add(self, digest: int, file_number: int, line: int | None) -> None:
        if digest in self._first:
            return
        if len(self._first) >= self.limit:
            self.full = True
            return
        self._first[digest] = file_number << 40 | (line or 0)

    def __len__(self) -> int:
        return len(self._first)


# -- one file, streamed -----------------------------------------------------------------------


@dataclass
class FileReport:
    """What checking one file found."""

    name: str
    bytes: int = 0  # bytes read
    size: int | None = None  # the file's size, when known
    lines: int = 0  # lines read (numbered ones)
    rows: int = 0
    chat_rows: int = 0
    prompt_completion_rows: int = 0
    characters: int = 0  # of all contents: a rough size without a tokenizer
    complete: bool = True  # False: only a sample was read
    sha256: str | None = None  # of the whole file, when it was read whole
    error_count: int = 0
    errors: list[str] = field(default_factory=list)  # the first REPORTED
    warning_count: int = 0
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    overlap: int = 0  # rows also in the index compared against (validation vs train)
    empty_contents: int = 0
    first: dict[str, str] = field(default_factory=dict)  # the first row warning of each kind

    @property
    def format(self) -> str:
        if self.chat_rows and self.prompt_completion_rows:
            return "mixed"
        if self.prompt_completion_rows:
            return "prompt-completion"
        return "chat" if self.chat_rows else "none"

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.name,
            "format": self.format,
            "rows": self.rows,
            "chat_rows": self.chat_rows,
            "prompt_completion_rows": self.prompt_completion_rows,
            "lines": self.lines,
            "bytes": self.bytes,
            "size": self.size,
            "characters": self.characters,
            "complete": self.complete,
            "sha256": self.sha256,
            "ok": self.ok,
            "error_count": self.error_count,
            "errors": list(self.errors),
            "warning_count": self.warning_count,
            "warnings": list(self.warnings),
            "duplicates": self.duplicates,
            "overlap": self.overlap,
            "empty_contents": self.empty_contents,
        }


class JsonlCheck:
    """Checks one JSONL file fed in order as chunks of bytes (``feed``), or as windows of a
    large object at their byte offsets (``feed_window``), then ``close``.

    ``fail_fast``: raise the first error as DataRuleError (the training job). Otherwise errors and
    warnings are collected in the report. ``index`` finds repeated rows (shared by the files of
    a channel); ``compare_with`` counts rows also present there (validation against train).
    ``on_example`` receives each valid row; ``keep`` keeps them in ``examples``.
    """

    def __init__(
        self,
        name: str,
        *,
        fail_fast: bool = False,
        index: RowIndex | None = None,
        compare_with: RowIndex | None = None,
        on_example: Callable[[Example], None] | None = None,
        keep: bool = False,
        size: int | None = None,
    ) -> None:
        self.report = FileReport(name=name, size=size)
        self.fail_fast = fail_fast
        self.index = index if index is not None else RowIndex()
        self._file_number = self.index.file_number(name)
        self.compare_with = compare_with
        self.on_example = on_example
        self.examples: list[Example] | None = [] if keep else None
        self._sha256: Any = hashlib.sha256()
        self._pending = bytearray()  # the line being read
        self._skipping = False  # inside a line already refused as too long
        self._line = 0
        self._closed = False

    # -- input --------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """The file's next bytes."""
        self.report.bytes += len(chunk)
        self._sha256.update(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            self._end_line(chunk[start:end])
            start = end + 1
        rest = chunk[start:]
        if rest and not self._skipping:
            self._pending += rest
            if len(self._pending) > MAX_LINE_BYTES:
                self._too_long()

    def feed_window(self, data: bytes, offset: int, *, at_end: bool) -> None:
        """A window of a file read in samples: ``data`` starts at byte ``offset`` (a partial row
        before its first newline is skipped, unless it starts the file) and ends at the file's
        end when ``at_end`` (else a partial last row is skipped). Rows are named by offset."""
        self.report.complete = False
        self.report.bytes += len(data)
        start = 0
        if offset > 0:
            first = data.find(b"\n")
            if first < 0:
                return
            start = first + 1
        while start < len(data):
            end = data.find(b"\n", start)
            if end < 0:
                if not at_end:
                    return
                end = len(data)
            where = f"{self.report.name}, the row at byte {offset + start:,}"
            self._row(data[start:end], where, line=None, first=offset + start == 0)
            start = end + 1

    def close(self) -> FileReport:
        """End of input: the last line, the file-level rules; returns the report."""
        if self._closed:
            return self.report
        self._closed = True
        if self.report.complete:
            if self._pending and not self._skipping:  # a last line with no newline after it
                last = bytes(self._pending)
                self._pending.clear()
                self._end_line(last)
            self.report.sha256 = self._sha256.hexdigest()
        if self.report.complete and self.report.rows == 0 and self.report.error_count == 0:
            self._problem(DataRuleError(self.report.name, "file is empty (no JSON lines)"))
        return self.report

    # -- lines and rows -----------------------------------------------------------------------

    def _end_line(self, tail: bytes) -> None:
        if self._skipping:  # the end of a line already refused as too long
            self._skipping = False
            self._pending.clear()
            return
        self._line += 1
        self.report.lines += 1
        if self._pending:
            self._pending += tail
            raw = bytes(self._pending)
            self._pending.clear()
        else:
            raw = tail
        if len(raw) > MAX_LINE_BYTES:
            self._problem(self._line_too_long(self._line))
            return
        self._row(raw, f"{self.report.name}:{self._line}", line=self._line, first=self._line == 1)

    def _too_long(self) -> None:
        """The line being read passed MAX_LINE_BYTES: refuse it, skip to its end."""
        self._line += 1
        self.report.lines += 1
        self._problem(self._line_too_long(self._line))
        self._pending.clear()
        self._skipping = True

    def _line_too_long(self, line: int) -> DataRuleError:
        mib, rest = divmod(MAX_LINE_BYTES, 1024 * 1024)
        limit = f"{mib} MiB" if mib and not rest else f"{MAX_LINE_BYTES:,} bytes"
        return DataRuleError(
            f"{self.report.name}:{line}",
            f"line is longer than {limit}; one row is one training example, far shorter",
        )

    def _row(self, raw: bytes, where: str, *, line: int | None, first: bool) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self._problem(
                DataRuleError(
                    where,
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1} "
                    "of the line); save the file as UTF-8",
                )
            )
            return
        if first:
            text = text.removeprefix("\ufeff")
        text = text.strip()
        if not text:
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            self._problem(
                DataRuleError(where, f"malformed JSON ({error.msg} at column {error.colno})")
            )
            return
        except (ValueError, RecursionError) as error:  # a 5,000-digit number, [[[[...]]]]
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            self._problem(DataRuleError(where, f"malformed JSON ({reason})"))
            return
        try:
            example = parse_row(value, where)
        except DataRuleError as problem:
            self._problem(problem)
            return
        self._accept(example, where, line)

    def _accept(self, example: Example, where: str, line: int | None) -> None:
        report = self.report
        report.rows += 1
        if example.is_chat:
            report.chat_rows += 1
            report.characters += sum(len(m.content) for m in example.messages)
        else:
            report.prompt_completion_rows += 1
            report.characters += len(example.prompt or "") + len(example.completion or "")
        for message in _empty_turns(example):
            report.empty_contents += 1
            self._warn(f"{where}: {message}", "empty")
        digest = _digest(example)
        earlier = self.index.find(digest)
        if earlier is not None:
            report.duplicates += 1
            self._warn(f"{where}: repeats {earlier}", "duplicate")
        else:
            self.index.add(digest, self._file_number, line)
        if self.compare_with is not None:
            twin = self.compare_with.find(digest)
            if twin is not None:
                report.overlap += 1
                self._warn(f"{where}: is also a training row ({twin})", "overlap")
        if self.examples is not None:
            self.examples.append(example)
        if self.on_example is not None:
            self.on_example(example)

    def _problem(self, problem: DataRuleError) -> None:
        if self.fail_fast:
            raise problem
        self.report.error_count += 1
        if len(self.report.errors) < REPORTED:
            self.report.errors.append(str(problem))

    def _warn(self, text: str, kind: str) -> None:
        self.report.first.setdefault(kind, text)
        self.report.warning_count += 1
        if len(self.report.warnings) < REPORTED:
            self.report.warnings.append(text)


def check_chunks(name: str, chunks: Iterable[bytes], **options: Any) -> FileReport:
    """Check one file given as an iterable of byte chunks (see JsonlCheck for ``options``)."""
    check = JsonlCheck(name, **options)
    for chunk in chunks:
        check.feed(chunk)
    return check.close()


def file_warnings(report: FileReport) -> list[str]:
    """One line per kind of warning of a file, with its count and first row (what logs show;
    the rows themselves are in ``report.warnings``)."""
    found = []
    if report.format == "mixed":
        found.append(
            f"{report.name}: mixes {report.chat_rows:,} chat and {report.prompt_completion_rows:,}"
            " prompt/completion rows; both train, but one format per dataset is what you meant"
        )
    counts = {
        "duplicate": (report.duplicates, "rows repeat an earlier row"),
        "empty": (report.empty_contents, "user/system turns or prompts are empty"),
        "overlap": (
            report.overlap,
            "rows are also training rows (the evaluation measures memorization)",
        ),
    }
    for kind, (count, what) in counts.items():
        if count:
            found.append(f"{report.name}: {count:,} {what}; the first: {report.first[kind]}")
    return found


# -- token counts (with a tokenizer) ----------------------------------------------------------


@dataclass
class TokenStats:
    """Token lengths of rows against ``max_seq_length``, as the training job treats them: rows
    longer are truncated; rows with no trainable token left are dropped. ``tokens`` is what one
    epoch trains on (truncated lengths of the rows kept)."""

    max_seq_length: int
    rows: int = 0
    tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    longest: int = 0
    histogram: dict[str, int] = field(default_factory=dict)

    def buckets(self) -> list[str]:
        edges, edge = [], 64
        while edge < self.max_seq_length:
            edges.append(edge)
            edge *= 2
        labels = [f"<={edge}" for edge in edges]
        return [*labels, f"<={self.max_seq_length}", f">{self.max_seq_length}"]

    def add(self, length: int, trainable_within: int) -> None:
        """One row: its full token length, and its trainable tokens within max_seq_length."""
        self.rows += 1
        self.longest = max(self.longest, length)
        if not self.histogram:
            self.histogram = dict.fromkeys(self.buckets(), 0)
        label = next(
            (
                name
                for name in self.histogram
                if name.startswith("<=") and length <= int(name.removeprefix("<="))
            ),
            f">{self.max_seq_length}",
        )
        self.histogram[label] += 1
        if length > self.max_seq_length:
            self.truncated += 1
        if trainable_within == 0:
            self.dropped += 1
            return
        self.tokens += min(length, self.max_seq_length)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_seq_length": self.max_seq_length,
            "rows": self.rows,
            "tokens_per_epoch": self.tokens,
            "truncated": self.truncated,
            "dropped": self.dropped,
            "longest": self.longest,
            "histogram": dict(self.histogram),
        }
