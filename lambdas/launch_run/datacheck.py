"""The dataset objects a run pinned, checked before any training job starts.

Each pinned object is read with GetObject at its pinned version, streamed in 1 MiB chunks
through the training code's own rules (``llm_sft.datacheck``, part of this function's
asset): the same messages and line numbers as the training job and ``finetune data check``. A run
whose data the job would refuse is refused here, naming the object and line, minutes and a
GPU instance earlier. The training job still checks every row (defence in depth): what is
read here is bounded, so that the check fits the function (512 MB, 120 s, of which pinning a
prefix may take some) whatever the dataset's size:

- an object up to ``WHOLE_OBJECT_BYTES`` is read whole (every row, numbered lines);
- a larger one is sampled: its first ``HEAD_BYTES`` (numbered lines), then ``WINDOWS`` windows
  of ``WINDOW_BYTES`` spread evenly over the rest (rows named by byte offset: the lines before a
  window are not read, so their number is unknown);
- a run reads at most ``RUN_BYTES`` in all (objects past it are left to the job), and stops
  reading after ``TIME_BUDGET_SECONDS``. ``benchmarks/bench_data_check.py`` measures ~60 MB/s
  on one core, ~1.1 s per ``RUN_BYTES``; a 512 MB function has ~0.3 of a vCPU: ~4 s, plus the
  transfer from S3.

Memory: one chunk and one line at a time, plus 8-byte digests of at most ``INDEX_ROWS`` rows for
the duplicate and overlap warnings. Warnings (repeated rows, validation rows that are training
rows, empty user turns) are logged; only errors refuse the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from launch_run.checks import channel_field
from llm_sft.datacheck import FileReport, JsonlCheck, RowIndex, file_warnings, is_data_file
from runspec.request import S3_URI
from runspec.run import PinnedDataset, PinnedObject

__all__ = [
    "HEAD_BYTES",
    "RUN_BYTES",
    "TIME_BUDGET_SECONDS",
    "WHOLE_OBJECT_BYTES",
    "WINDOWS",
    "WINDOW_BYTES",
    "DataCheckResult",
    "check_pinned_datasets",
]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Objects up to this size are read whole.
WHOLE_OBJECT_BYTES = 32 * MIB
#: Larger objects: their first bytes, then windows spread over the rest.
HEAD_BYTES = 8 * MIB
WINDOWS = 16
WINDOW_BYTES = 256 * 1024
#: At most this much is read per run, and for at most this long.
RUN_BYTES = 64 * MIB
TIME_BUDGET_SECONDS = 30.0
#: Rows remembered for the duplicate and overlap warnings (~100 bytes each).
INDEX_ROWS = 500_000
#: Errors named in the refusal (each object's first error comes first).
MAX_PROBLEMS = 5
_CHUNK = MIB


@dataclass
class DataCheckResult:
    """What the check found: ``problems`` (``<request field>: <object>:<line>: <rule>``) refuse
    the run; ``reports`` per object read; ``unchecked`` objects left to the training job."""

    problems: list[str] = field(default_factory=list)
    reports: list[FileReport] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Budget:
    bytes_left: int
    deadline: float
    clock: Callable[[], float]

    @property
    def expired(self) -> bool:
        return self.clock() >= self.deadline


def check_pinned_datasets(
    s3: Any,
    datasets: dict[str, PinnedDataset],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> DataCheckResult:
    """Check the pinned objects of every channel (train first: validation rows are compared
    with its rows)."""
    budget = _Budget(RUN_BYTES, clock() + TIME_BUDGET_SECONDS, clock)
    result = DataCheckResult()
    errors: list[tuple[int, str]] = []  # (rank, problem): each object's first error first
    indexes: dict[str, RowIndex] = {}
    for channel in sorted(datasets, key=lambda name: (name != "train", name)):
        pinned = datasets[channel]
        match = S3_URI.match(pinned.uri)
        assert match is not None  # validated by the request schema
        bucket, prefix = match.group("bucket"), match.group("key")
        index = indexes.setdefault(channel, RowIndex(limit=INDEX_ROWS))
        compare_with = indexes.get("train") if channel != "train" else None
        objects = _data_objects(pinned, prefix)
        if not objects:
            errors.append((0, f"{channel_field(channel)}: {_no_data_files(pinned)}"))
            continue
        for obj in objects:
            uri = f"s3://{bucket}/{obj.key}"
            whole = obj.size <= min(WHOLE_OBJECT_BYTES, budget.bytes_left)
            if budget.expired or not (whole or budget.bytes_left >= HEAD_BYTES):
                result.unchecked.append(uri)
                continue
            report = _check_object(s3, bucket, obj, uri, index, compare_with, budget)
            result.reports.append(report)
            result.warnings.extend(file_warnings(report))
            errors.extend(
                (rank, f"{channel_field(channel)}: {error}")
                for rank, error in enumerate(report.errors)
            )
    ordered = [problem for _, problem in sorted(errors, key=lambda item: item[0])]
    result.problems = ordered[:MAX_PROBLEMS]
    total = len(ordered) + sum(r.error_count - len(r.errors) for r in result.reports)
    if total > MAX_PROBLEMS:
        more = total - MAX_PROBLEMS
        result.problems.append(f"dataset: {more:,} more rows break the rules (finetune data check)")
    for warning in result.warnings:
        logger.warning("dataset: %s", warning)
    if result.unchecked:
        logger.warning(
            "dataset: %d objects not read within the check's budget (%d MiB, %.0f s); the "
            "training job checks them: %s",
            len(result.unchecked),
            RUN_BYTES // MIB,
            TIME_BUDGET_SECONDS,
            ", ".join(result.unchecked[:5]),
        )
    return result


def _data_objects(pinned: PinnedDataset, prefix: str) -> list[PinnedObject]:
    """The objects the training job reads as data (the job's channel folder rule): ``.jsonl``
    objects, outside hidden folders under a prefix."""
    if not prefix.endswith("/"):
        return [o for o in pinned.objects if is_data_file(o.key.rsplit("/", 1)[-1])]
    return sorted(
        (o for o in pinned.objects if is_data_file(o.key[len(prefix) :])), key=lambda o: o.key
    )


def _no_data_files(pinned: PinnedDataset) -> str:
    found = ", ".join(o.key.rsplit("/", 1)[-1] for o in pinned.objects[:5])
    return (
        f"{pinned.uri} holds no .jsonl object (found: {found}); the training job reads only "
        "*.jsonl files (not hidden, not in hidden folders)"
    )


def _check_object(
    s3: Any,
    bucket: str,
    obj: PinnedObject,
    uri: str,
    index: RowIndex,
    compare_with: RowIndex | None,
    budget: _Budget,
) -> FileReport:
    check = JsonlCheck(uri, index=index, compare_with=compare_with, size=obj.size)
    if obj.size <= min(WHOLE_OBJECT_BYTES, budget.bytes_left):
        for chunk in _read(s3, bucket, obj, budget):
            check.feed(chunk)
        if check.report.bytes < obj.size:  # the time budget ran out mid-object
            check.report.complete = False
        return check.close()
    # Sampled: the head (numbered lines), then windows spread evenly over the rest.
    head = min(HEAD_BYTES, budget.bytes_left)
    for chunk in _read(s3, bucket, obj, budget, end=head):
        check.feed(chunk)
    check.report.complete = False  # the head's partial last line stays unread
    for start in _window_starts(head, obj.size):
        if budget.expired or budget.bytes_left < WINDOW_BYTES:
            break
        end = min(obj.size, start + WINDOW_BYTES)
        window = b"".join(_read(s3, bucket, obj, budget, start=start, end=end))
        check.feed_window(window, start, at_end=end == obj.size)
    return check.close()


def _window_starts(head: int, size: int) -> list[int]:
    """Where the windows after the head start: ``WINDOWS`` of them spread evenly, the last one
    ending at the object's end; never overlapping (a row read twice would look repeated)."""
    rest = size - head
    if rest <= WINDOWS * WINDOW_BYTES:
        return list(range(head, size, WINDOW_BYTES))
    return [head + (rest - WINDOW_BYTES) * i // (WINDOWS - 1) for i in range(WINDOWS)]


def _read(
    s3: Any, bucket: str, obj: PinnedObject, budget: _Budget, *, start: int = 0, end: int = -1
) -> Iterator[bytes]:
    """The pinned version's bytes [start, end) (end -1: to the end), chunk by chunk, while the
    budget lasts."""
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
    if obj.version_id and obj.version_id != "null":
        arguments["VersionId"] = obj.version_id
    if start or end >= 0:
        arguments["Range"] = f"bytes={start}-{'' if end < 0 else end - 1}"
    body = s3.get_object(**arguments)["Body"]
    try:
        for chunk in body.iter_chunks(_CHUNK):
            budget.bytes_left -= len(chunk)
            yield chunk
            if budget.expired:
                return
    finally:
        body.close()
