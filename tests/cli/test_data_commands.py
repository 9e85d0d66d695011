"""``finetune data check`` / ``upload`` and local paths in run requests: the training code's rules
on the user's files, token counts as the job counts them, a pinned upload that a local run then
trains on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from finetune.cli import app
from finetune.local.store import StateStore

REPO = Path(__file__).resolve().parents[2]
CHAT = REPO / "examples" / "data" / "chat"
GOOD = {"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def write(path: Path, *lines: str | dict[str, Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def test_check_reports_format_rows_and_warnings(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", GOOD, GOOD, {"prompt": "", "completion": "x"})
    validation = write(tmp_path / "val.jsonl", GOOD)
    result = invoke("data", "check", str(train), "--validation", str(validation), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (train_report,) = report["channels"]["train"]
    assert (train_report["format"], train_report["rows"], train_report["duplicates"]) == (
        "mixed",
        3,
        1,
    )
    assert train_report["sha256"]
    assert report["channels"]["validation"][0]["overlap"] == 1
    assert report["ok"] is True
    text = invoke("data", "check", str(train), "--validation", str(validation))
    assert text.exit_code == 0
    assert (
        f"warning: {validation}: 1 rows are also training rows (the evaluation measures "
        f"memorization); the first: {validation}:1: is also a training row ({train}:1)"
    ) in text.stdout
    assert "ok: 2 files, 0 errors" in text.stdout


def test_check_refuses_with_file_and_line_and_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.jsonl", GOOD, "{oops", {"messages": [{"role": "user"}]})
    result = invoke("data", "check", str(bad))
    assert result.exit_code == 2
    assert f"error: {bad}:2: malformed JSON" in result.stdout
    assert f"error: {bad}:3: messages[0] is missing field 'content'" in result.stdout
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: 2 errors in the data; the first: {bad}:2: malformed JSON")


def test_check_reads_a_channel_folder_as_the_job_does(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    write(tmp_path / "shards" / "a.jsonl", GOOD)
    write(tmp_path / "shards" / "b.jsonl", {"prompt": "p", "completion": "c"})
    (tmp_path / "shards" / "notes.txt").write_text("ignored")
    result = invoke("data", "check", str(tmp_path / "shards"), "--json")
    assert result.exit_code == 0, result.output
    files = [r["file"] for r in json.loads(result.stdout)["channels"]["train"]]
    assert [Path(f).name for f in files] == ["a.jsonl", "b.jsonl"]
    missing = invoke("data", "check", str(tmp_path / "absent.jsonl"))
    assert missing.exit_code == 2
    assert "absent.jsonl: No such file or directory" in missing.stderr


def test_token_counts_are_the_training_jobs(tmp_path: Path) -> None:
    """With a tokenizer, the counts are what the job's encoder makes of the same rows."""
    from finetune.local.session import TINY_MODEL_KEY, LocalSession
    from llm_sft.data import load_channel
    from llm_sft.encoding import encode_examples
    from llm_sft.hyperparameters import Hyperparameters
    from llm_sft.modeling import load_tokenizer, resolve_base_model

    demo_model = f"s3://llmft-local-datasets-123456789012-us-east-1/{TINY_MODEL_KEY}"
    result = invoke(
        "data", "check", str(CHAT / "validation.jsonl"), "--base-model", demo_model,
        "--max-seq-length", "40", "--epochs", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tokens = report["tokens"]["train"]
    folder = str(LocalSession.tiny_model())
    tokenizer = load_tokenizer(resolve_base_model(folder, None), Hyperparameters(model_id=folder))
    examples = load_channel("train", CHAT / "validation.jsonl").examples
    encoded = encode_examples(tokenizer, examples, 40, "train")
    assert tokens["tokens_per_epoch"] == encoded.tokens
    assert (tokens["truncated"], tokens["dropped"]) == (encoded.truncated, encoded.dropped)
    assert tokens["truncated"] > 0
    assert sum(tokens["histogram"].values()) == len(examples)
    assert report["estimate_tokens"] == 2 * encoded.tokens


def test_upload_refuses_bad_data_and_uploads_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.jsonl", "{oops")
    state = tmp_path / "state"
    result = invoke("--local", "--state-dir", str(state), "data", "upload", str(bad))
    assert result.exit_code == 2
    assert "nothing was uploaded" in result.stderr
    assert not state.exists()


def test_local_paths_on_aws_are_refused_with_the_upload_hint(tmp_path: Path) -> None:
    write(tmp_path / "mine.jsonl", GOOD)
    run_file = tmp_path / "run.yaml"
    run_file.write_text("dataset:\n  train: mine.jsonl\n")
    result = invoke("--aws", "launch", str(run_file))
    assert result.exit_code == 2, result.output
    assert "dataset.train: local paths are staged by the local backend only" in result.stderr
    assert "finetune data upload FILE" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("dataset:\n  train: absent.jsonl\n", "is neither an s3:// URI nor a file"),
        ("base_model: ./no-model/\n", "base_model: './no-model/' is a path, but"),
        ("base_model: ./data/\n", "holds no model: expected config.json"),
        ("dataset:\n  train: mine.jsonl\ntraining:\n  spot: 'no'\n", "training.spot: Input"),
    ],
)
def test_local_paths_in_run_files_are_checked_before_anything_starts(
    tmp_path: Path, content: str, message: str
) -> None:
    write(tmp_path / "mine.jsonl", GOOD)
    (tmp_path / "data").mkdir()
    run_file = tmp_path / "run.yaml"
    run_file.write_text(content)
    state = tmp_path / "state"
    result = invoke("--local", "--state-dir", str(state), "launch", str(run_file))
    assert result.exit_code == 2, result.output
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {run_file}: ")
    assert message in first
    assert not state.exists()


def test_relative_paths_are_relative_to_the_run_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetune.datasets import load_launch_file

    folder = tmp_path / "project"
    folder.mkdir()
    write(folder / "mine.jsonl", GOOD)
    (folder / "run.yaml").write_text("dataset:\n  train: mine.jsonl\n")
    monkeypatch.chdir(tmp_path)
    document = load_launch_file(Path("project/run.yaml"))
    assert document["dataset"]["train"] == str((folder / "mine.jsonl").resolve())


@pytest.mark.slow
def test_upload_prints_a_pinned_block_that_a_local_run_trains_on(tmp_path: Path) -> None:
    """Upload (local), paste the block into a run file with a local validation file and a
    local model folder, launch: the run pins the uploaded version and trains."""
    from finetune.local.session import LocalSession

    state = str(tmp_path / "state")
    mine = tmp_path / "mine"
    mine.mkdir()
    train = mine / "support.jsonl"
    train.write_bytes((CHAT / "train.jsonl").read_bytes())
    write(mine / "validation.jsonl", *CHAT.joinpath("validation.jsonl").read_text().splitlines())

    result = invoke("--local", "--state-dir", state, "data", "upload", str(train))
    assert result.exit_code == 0, result.output
    block = yaml.safe_load(result.stdout)
    uri = block["dataset"]["train"]
    assert uri.startswith("s3://llmft-local-datasets-123456789012-us-east-1/datasets/support/")
    assert uri.endswith("/support.jsonl")
    again = invoke("--local", "--state-dir", state, "data", "upload", str(train), "--json")
    (uploaded,) = json.loads(again.stdout)["objects"].values()
    assert uploaded["reused"] is True
    assert f"version {uploaded['version_id']}, sha256 {uploaded['sha256']}" in result.stdout

    run_file = mine / "run.yaml"
    request = {
        "run_name": "own-data",
        "experiment_name": "own",
        "base_model": str(LocalSession.tiny_model()),  # a local model folder
        "model_parameters_billions": 0.0002,
        "dataset": {"train": uri, "validation": "validation.jsonl"},  # a local file
        "training": {"instance_type": "ml.g5.xlarge", "spot": False, "max_runtime_hours": 1},
        "hyperparameters": {"max_steps": 4, "per_device_train_batch_size": 8},
    }
    run_file.write_text(yaml.safe_dump(request))
    launched = invoke("--local", "--state-dir", state, "launch", str(run_file), "--json")
    assert launched.exit_code == 0, launched.output
    assert json.loads(launched.stdout)["status"] == "SUCCEEDED"
    assert "dataset.validation: " in launched.stderr
    assert "base_model: " in launched.stderr

    record = StateStore(Path(state) / "state.db").run_record("own-data")
    assert record is not None
    datasets = record["run"]["datasets"]
    assert datasets["train"]["objects"][0]["version_id"] == uploaded["version_id"]
    staged = datasets["validation"]["objects"][0]["key"]
    assert staged.startswith("datasets/local/")
    assert staged.endswith("/validation.jsonl")
    assert record["run"]["base_model"].startswith(
        "s3://llmft-local-datasets-123456789012-us-east-1/base-models/local/"
    )
