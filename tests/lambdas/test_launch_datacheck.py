"""Data checked at launch (moto S3): the pinned object versions streamed through the training
code's rules, whole up to a size and sampled beyond it, within a byte and a time budget."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from launch_run import datacheck
from launch_run.datacheck import check_pinned_datasets
from launch_run.logic import resolve_run
from runspec.request import RunRequestError
from runspec.run import PinnedDataset, PinnedObject
from tests.lambdas.conftest import CHAT_ROW, Aws

BUCKET = "llmft-test-datasets"
GOOD = json.dumps(CHAT_ROW)
OUT_OF_ORDER = json.dumps(
    {"messages": [{"role": "assistant", "content": "4"}, {"role": "user", "content": "2 + 2?"}]}
)


def refusal(aws: Aws, request: dict[str, Any]) -> list[str]:
    with pytest.raises(RunRequestError) as raised:
        resolve_run(
            request, aws.settings, execution_name="e", s3=aws.client("s3"), ecr=aws.client("ecr")
        )
    return raised.value.problems


def pinned(aws: Aws, key: str, version_id: str | None = None) -> PinnedDataset:
    head = aws.client("s3").head_object(
        Bucket=BUCKET, Key=key, **({"VersionId": version_id} if version_id else {})
    )
    obj = PinnedObject(
        key=key, version_id=head.get("VersionId"), etag=head["ETag"], size=head["ContentLength"]
    )
    return PinnedDataset(uri=f"s3://{BUCKET}/{key}", objects=[obj])


def test_a_run_whose_data_the_job_would_refuse_is_refused_naming_object_and_line(
    aws: Aws,
) -> None:
    aws.put("data/train.jsonl", f"{GOOD}\n{GOOD}\n{OUT_OF_ORDER}\n{{oops\n")
    problems = refusal(aws, {"dataset": {"train": f"s3://{BUCKET}/data/train.jsonl"}})
    assert problems == [
        f"dataset.train: s3://{BUCKET}/data/train.jsonl:3: messages[0] is a assistant turn "
        "first, expected user; a conversation is an optional system turn, then user and "
        "assistant turns alternating, starting with user and ending with assistant",
        f"dataset.train: s3://{BUCKET}/data/train.jsonl:4: malformed JSON (Expecting property "
        "name enclosed in double quotes at column 2)",
    ]


def test_the_pinned_version_is_read_not_the_latest(aws: Aws) -> None:
    first = aws.put("data/v.jsonl", f"{OUT_OF_ORDER}\n")
    aws.put("data/v.jsonl", f"{GOOD}\n")
    result = check_pinned_datasets(
        aws.client("s3"), {"train": pinned(aws, "data/v.jsonl", first["VersionId"])}
    )
    assert result.problems[0].startswith(f"dataset.train: s3://{BUCKET}/data/v.jsonl:1: ")
    assert not check_pinned_datasets(
        aws.client("s3"), {"train": pinned(aws, "data/v.jsonl")}
    ).problems


def test_every_channel_and_every_object_of_a_prefix(aws: Aws) -> None:
    aws.put("shards/a.jsonl", f"{GOOD}\n")
    aws.put("shards/b.jsonl", "\n\n")
    aws.put("shards/notes.txt", "not data: the job does not read it")
    aws.put("shards/.hidden/c.jsonl", "not read either")
    aws.put("val/only.csv", "a,b\n")
    problems = refusal(
        aws,
        {"dataset": {"train": f"s3://{BUCKET}/shards/", "validation": f"s3://{BUCKET}/val/"}},
    )
    assert problems == [
        f"dataset.train: s3://{BUCKET}/shards/b.jsonl: file is empty (no JSON lines)",
        f"dataset.validation: s3://{BUCKET}/val/ holds no .jsonl object (found: only.csv); "
        "the training job reads only *.jsonl files (not hidden, not in hidden folders)",
    ]


def test_an_object_the_job_would_not_read_as_data_is_refused(aws: Aws) -> None:
    aws.put("data/train.json", f"{GOOD}\n")
    (problem,) = refusal(aws, {"dataset": {"train": f"s3://{BUCKET}/data/train.json"}})
    assert problem.startswith(f"dataset.train: s3://{BUCKET}/data/train.json holds no .jsonl")


def test_warnings_are_logged_and_do_not_refuse(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    train = aws.put_jsonl("data/t.jsonl", [CHAT_ROW, CHAT_ROW])
    validation = aws.put_jsonl("data/v.jsonl", [CHAT_ROW])
    with caplog.at_level(logging.WARNING, logger="launch_run.datacheck"):
        run = resolve_run(
            {"dataset": {"train": train, "validation": validation}},
            aws.settings,
            execution_name="e",
            s3=aws.client("s3"),
            ecr=aws.client("ecr"),
        )
    assert run.datasets["train"].objects[0].key == "data/t.jsonl"
    assert f"{train}:2: repeats {train}:1" in caplog.text
    assert f"{validation}:1: is also a training row ({train}:1)" in caplog.text


def test_a_large_object_is_sampled_within_the_budget(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datacheck, "WHOLE_OBJECT_BYTES", 4096)
    monkeypatch.setattr(datacheck, "HEAD_BYTES", 1024)
    monkeypatch.setattr(datacheck, "WINDOWS", 4)
    monkeypatch.setattr(datacheck, "WINDOW_BYTES", 512)
    rows = [GOOD] * 400  # ~34 KB
    rows[5] = OUT_OF_ORDER  # in the head: named by line
    rows[-2] = "{oops"  # in the last window: named by byte offset
    body = "".join(row + "\n" for row in rows)
    aws.put("big/train.jsonl", body)
    result = check_pinned_datasets(aws.client("s3"), {"train": pinned(aws, "big/train.jsonl")})
    offset = body.rindex("{oops")
    assert result.problems == [
        f"dataset.train: s3://{BUCKET}/big/train.jsonl:6: messages[0] is a assistant turn first,"
        " expected user; a conversation is an optional system turn, then user and assistant "
        "turns alternating, starting with user and ending with assistant",
        f"dataset.train: s3://{BUCKET}/big/train.jsonl, the row at byte {offset:,}: malformed "
        "JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    (report,) = result.reports
    assert not report.complete
    assert report.bytes <= 1024 + 4 * 512


def test_objects_past_the_run_budget_are_left_to_the_job(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(datacheck, "RUN_BYTES", 100)
    for name in ("a", "b", "c"):
        aws.put(f"many/{name}.jsonl", f"{GOOD}\n")
    aws.put("many/d.jsonl", "{oops" + " " * 100 + "\n")  # past the budget: the job finds it
    datasets = {
        "train": PinnedDataset(
            uri=f"s3://{BUCKET}/many/",
            objects=[pinned(aws, f"many/{n}.jsonl").objects[0] for n in "abcd"],
        )
    }
    with caplog.at_level(logging.WARNING, logger="launch_run.datacheck"):
        result = check_pinned_datasets(aws.client("s3"), datasets)
    assert result.problems == []
    assert [r.name for r in result.reports] == [f"s3://{BUCKET}/many/a.jsonl"]
    assert result.unchecked == [f"s3://{BUCKET}/many/{n}.jsonl" for n in "bcd"]
    assert "3 objects not read within the check's budget" in caplog.text


def test_reading_stops_when_the_time_budget_is_spent(aws: Aws) -> None:
    aws.put("slow/a.jsonl", f"{GOOD}\n")
    aws.put("slow/b.jsonl", "{oops\n")
    ticks = iter([0.0, 1.0, 2.0, *[100.0] * 20])  # start, object a, its chunk, then late
    datasets = {
        "train": PinnedDataset(
            uri=f"s3://{BUCKET}/slow/",
            objects=[pinned(aws, f"slow/{n}.jsonl").objects[0] for n in "ab"],
        )
    }
    result = check_pinned_datasets(aws.client("s3"), datasets, clock=lambda: next(ticks))
    assert result.problems == []
    assert result.unchecked == [f"s3://{BUCKET}/slow/b.jsonl"]


def test_many_bad_rows_name_the_first_of_each_object_then_count(aws: Aws) -> None:
    aws.put("bad/a.jsonl", "{1\n" * 30)
    aws.put("bad/b.jsonl", "[]\n")
    problems = refusal(aws, {"dataset": {"train": f"s3://{BUCKET}/bad/"}})
    assert problems[0].startswith(f"dataset.train: s3://{BUCKET}/bad/a.jsonl:1: malformed")
    assert problems[1] == (
        f"dataset.train: s3://{BUCKET}/bad/b.jsonl:1: expected a JSON object, got list"
    )
    assert problems[2].startswith(f"dataset.train: s3://{BUCKET}/bad/a.jsonl:2: malformed")
    assert len(problems) == datacheck.MAX_PROBLEMS + 1
    assert problems[-1] == "dataset: 26 more rows break the rules (finetune data check)"
