"""Data checks on a large file: peak memory and throughput (a benchmark, not a test).

Generates a chat JSONL file of ``--size-mb`` (default 200 MB; 1 row in 50 repeated, so the
duplicate index does real work), then measures, each in a process of its own:

- ``finetune data check FILE --json``: the whole file through ``llm_sft.datacheck`` (the rules
  the training job and the launch function apply), as a user runs it;
- the launch function's check of the same file as a pinned S3 object (``launch_run.datacheck``
  against a stand-in S3 client that serves the file with ranges): what it reads is bounded by
  its budget whatever the object's size.

Prints wall time, MB/s and peak RSS (``ru_maxrss`` of the child) for each. Run:

    .venv/bin/python benchmarks/bench_data_check.py [--size-mb 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    *("the", "model", "learns", "to", "answer", "questions", "about", "orders", "refunds"),
    *("shipping", "accounts", "invoices", "passwords", "devices", "plans", "billing"),
    *("addresses", "deliveries", "returns", "warranties", "support", "tickets"),
]


def generate(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Chat rows of realistic length (~0.5-2 KB) until the file reaches ``size_bytes``."""
    rng = random.Random(seed)
    rows = 0
    written = 0
    earlier: list[str] = []
    with path.open("w", encoding="utf-8") as handle:
        while written < size_bytes:
            if earlier and rng.random() < 0.02:
                line = rng.choice(earlier)
            else:
                question = " ".join(rng.choices(WORDS, k=rng.randint(8, 60)))
                answer = " ".join(rng.choices(WORDS, k=rng.randint(40, 250)))
                messages = [
                    {"role": "system", "content": "You are a helpful support assistant."},
                    {"role": "user", "content": f"{question}? (ticket {rows})"},
                    {"role": "assistant", "content": answer},
                ]
                if rng.random() < 0.3:
                    messages += [
                        {"role": "user", "content": "And then?"},
                        {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=30))},
                    ]
                line = json.dumps({"messages": messages}) + "\n"
                if len(earlier) < 1000:
                    earlier.append(line)
            handle.write(line)
            written += len(line.encode())
            rows += 1
    return rows


_LAUNCH_PROBE = """
import io, json, sys, time
from pathlib import Path
from botocore.response import StreamingBody
from launch_run.datacheck import check_pinned_datasets
from runspec.run import PinnedDataset, PinnedObject

path = Path(sys.argv[1])
size = path.stat().st_size
read = 0

class FileS3:
    def get_object(self, Bucket, Key, VersionId=None, Range=None):
        global read
        start, end = 0, size - 1
        if Range:
            first, last = Range.removeprefix("bytes=").split("-")
            start, end = int(first), int(last) if last else size - 1
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(end - start + 1)
        read += len(data)
        return {"Body": StreamingBody(io.BytesIO(data), len(data))}

pinned = PinnedDataset(
    uri="s3://bench/data/train.jsonl",
    objects=[PinnedObject(key="data/train.jsonl", version_id="v1", etag="e", size=size)],
)
started = time.perf_counter()
result = check_pinned_datasets(FileS3(), {"train": pinned})
elapsed = time.perf_counter() - started
(report,) = result.reports
print(json.dumps({"seconds": elapsed, "read": read, "rows": report.rows,
                  "problems": result.problems, "complete": report.complete}))
"""


def _run_child(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes (this child's own, from wait4) and stdout of a child."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), str(REPO / "training_code"), str(REPO / "lambdas")]
        ),
        "NO_COLOR": "1",
    }
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode not in (0, 2):
            sys.exit(f"{' '.join(command)} failed:\n{err.read().decode()}")
        return elapsed, usage.ru_maxrss * 1024, out.read().decode()  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0)
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-data-check-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    size_target = int(args.size_mb * 1_000_000)
    if not path.is_file() or abs(path.stat().st_size - size_target) > 2_000_000:
        started = time.perf_counter()
        rows = generate(path, size_target)
        print(f"generated {path}: {rows:,} rows in {time.perf_counter() - started:.1f} s")
    size = path.stat().st_size
    mb = size / 1_000_000
    print(f"file: {mb:,.1f} MB")

    # A baseline: the interpreter with the CLI's imports, checking a one-row file.
    tiny = folder / "one.jsonl"
    tiny.write_text(path.open(encoding="utf-8").readline())
    cli = [sys.executable, "-m", "finetune.cli", "data", "check"]
    _, baseline, _ = _run_child([*cli, str(tiny), "--json"])

    seconds, peak, stdout = _run_child([*cli, str(path), "--json"])
    report = json.loads(stdout)["channels"]["train"][0]
    print(
        f"finetune data check: {report['rows']:,} rows, {report['duplicates']:,} repeated, "
        f"{report['error_count']} errors in {seconds:.1f} s = {mb / seconds:.1f} MB/s; "
        f"peak RSS {peak / 2**20:,.0f} MiB (a one-row file: {baseline / 2**20:,.0f} MiB; "
        f"{(peak - baseline) / max(report['rows'], 1):,.0f} bytes per row for the duplicate index)"
    )

    seconds, peak, stdout = _run_child([sys.executable, "-c", _LAUNCH_PROBE, str(path)])
    launch = json.loads(stdout)
    print(
        f"launch check (sampled object): read {launch['read'] / 2**20:,.1f} MiB of "
        f"{size / 2**20:,.1f} MiB, {launch['rows']:,} rows, problems {launch['problems']}, in "
        f"{launch['seconds']:.2f} s ({launch['read'] / 1e6 / max(launch['seconds'], 1e-9):.1f} "
        f"MB/s of checking); peak RSS {peak / 2**20:,.0f} MiB"
    )
    if args.keep is None:
        path.unlink()
        tiny.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
