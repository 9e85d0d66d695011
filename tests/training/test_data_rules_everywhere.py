"""One set of rules, three places: the same file is refused with the same line and message by
``finetune data check``, by the launch function (moto S3) and by the training job."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from finetune.cli import app
from launch_run.logic import resolve_run
from runspec.request import RunRequestError
from tests.lambdas.conftest import ACCOUNT, IMAGE_REPOSITORY, IMAGE_TAG, REGION, make_settings

from .conftest import RunMain

GOOD = json.dumps(
    {"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]}
).encode()
BAD_FILES = {
    "turns out of order": GOOD
    + b'\n{"messages": [{"role": "assistant", "content": "4"},'
    + b' {"role": "user", "content": "?"}]}\n',
    "malformed JSON": GOOD + b"\n\n" + GOOD + b'\n{"prompt": "p", "completion": "c"\n',
    "not UTF-8": GOOD + b'\n{"prompt": "caf\xe9", "completion": "c"}\n',
    "nothing to learn": GOOD + b'\n{"prompt": "p", "completion": "  "}\n',
    "no rows": b"\n \n",
}


def _located(message: str, location: str) -> tuple[str, str]:
    """(line, rule) of ``<location>:<line>: <rule>`` (or ``<location>: <rule>``)."""
    match = re.match(rf"^{re.escape(location)}(?::(\d+))?: (.*)$", message)
    assert match is not None, (message, location)
    return match.group(1) or "", match.group(2)


def _launch_problem(body: bytes) -> str:
    settings = make_settings()
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=settings.datasets_bucket)
        s3.put_bucket_versioning(
            Bucket=settings.datasets_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        s3.put_object(Bucket=settings.datasets_bucket, Key="mine/train.jsonl", Body=body)
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName=IMAGE_REPOSITORY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + hashlib.sha256(ACCOUNT.encode()).hexdigest()},
            "layers": [],
        }
        ecr.put_image(
            repositoryName=IMAGE_REPOSITORY, imageManifest=json.dumps(manifest), imageTag=IMAGE_TAG
        )
        request = {"dataset": {"train": f"s3://{settings.datasets_bucket}/mine/train.jsonl"}}
        with pytest.raises(RunRequestError) as raised:
            resolve_run(request, settings, execution_name="e", s3=s3, ecr=ecr)
    return raised.value.problems[0].removeprefix("dataset.train: ")


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_the_same_file_is_refused_identically_everywhere(
    run_main: RunMain, tmp_path: Path, case: str
) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    path = channel / "train.jsonl"
    path.write_bytes(BAD_FILES[case])

    checked = CliRunner().invoke(app, ["data", "check", str(path), "--json"])
    assert checked.exit_code == 2, checked.output
    cli = json.loads(checked.stdout)["channels"]["train"][0]["errors"][0]

    job = run_main({"train_dir": str(channel)})
    assert job.exit_code == 1
    assert job.failure is not None
    trained = job.failure.removeprefix("Data error: ")

    launched = _launch_problem(BAD_FILES[case])
    uri = "s3://llmft-test-datasets/mine/train.jsonl"

    expected = _located(cli, str(path))
    assert _located(trained, str(path)) == expected
    assert _located(launched, uri) == expected
