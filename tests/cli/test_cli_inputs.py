"""The CLI's input handling and estimates: fast, no platform needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "runs"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def estimate(tmp_path: Path, request: dict[str, Any], *options: str) -> dict[str, Any]:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(request))
    result = invoke("estimate", str(path), "--json", *options)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_help_everywhere() -> None:
    assert invoke("--help").exit_code == 0
    for command in ("estimate", "launch", "watch", "runs", "compare", "promote", "demo"):
        result = invoke(command, "--help")
        assert result.exit_code == 0, command
        assert "--json" in result.stdout or command == "demo"


@pytest.mark.parametrize(
    ("request_", "instance", "fits"),
    [
        # 8B LoRA fits one 24 GB A10G at sequence 2048, micro-batch 1.
        (
            {
                "base_model": "meta-llama/Llama-3.1-8B",
                "hyperparameters": {"max_seq_length": 2048, "per_device_train_batch_size": 1},
            },
            "ml.g5.2xlarge",
            True,
        ),
        # 70B QLoRA does not fit a 24 GB GPU ...
        (
            {
                "base_model": "meta-llama/Llama-3.1-70B",
                "hyperparameters": {
                    "method": "qlora",
                    "max_seq_length": 1024,
                    "per_device_train_batch_size": 1,
                },
            },
            "ml.g5.2xlarge",
            False,
        ),
    ],
)
def test_estimate_known_cases(
    tmp_path: Path, request_: dict[str, Any], instance: str, fits: bool
) -> None:
    result = estimate(tmp_path, {**request_, "training": {"instance_type": instance}})
    assert result["requested"]["fit"]["fits"] is fits


def test_70b_qlora_needs_at_least_48_gb(tmp_path: Path) -> None:
    result = estimate(
        tmp_path,
        {
            "base_model": "meta-llama/Llama-3.1-70B",
            "training": {"instance_type": "ml.g5.2xlarge"},
            "hyperparameters": {
                "method": "qlora",
                "max_seq_length": 1024,
                "per_device_train_batch_size": 1,
            },
        },
    )
    recommended = result["recommended"]["fit"]
    assert recommended["fits"] is True
    assert recommended["gpu_memory_gib"] >= 48


def test_estimate_prices_on_demand_and_spot_and_counts_tokens(tmp_path: Path) -> None:
    result = estimate(
        tmp_path,
        {"hyperparameters": {"max_steps": 100, "per_device_train_batch_size": 2}},
        "--region",
        "eu-west-1",
    )
    assert result["tokens"] == 100 * 2 * 1024
    requested = result["requested"]
    assert requested["on_demand"]["total_usd"] > requested["spot"]["total_usd"] > 0
    assert result["region"] == "eu-west-1"


def test_estimate_counts_a_local_dataset(tmp_path: Path) -> None:
    dataset = Path(__file__).resolve().parents[2] / "examples/data/chat/train.jsonl"
    result = estimate(tmp_path, {}, "--dataset", str(dataset))
    assert 10_000 < result["tokens"] < 200_000
    assert "train.jsonl" in result["tokens_basis"]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("training: [unclosed", ".yaml", "run.yaml:1: not valid YAML"),
        ("{not json", ".json", "run.json:1: not valid JSON"),
        ("trainng: {}\n", ".yaml", "trainng: unknown field"),
        ("training:\n  instance_type: gpu\n", ".yaml", "training.instance_type: 'gpu' is not"),
        ("- a\n- b\n", ".yaml", "(request): must be a JSON object, got list"),
    ],
)
def test_bad_run_files_are_one_clear_line_and_exit_2(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"run{suffix}"
    path.write_text(content)
    for command in ("estimate", "launch"):
        result = invoke("--local", "--state-dir", str(tmp_path / "state"), command, str(path))
        assert result.exit_code == 2, result.output
        first, *rest = result.stderr.strip().splitlines()
        assert first.startswith("error: ")
        assert message in first
        assert all(line.startswith("hint: ") for line in rest)
        assert "Traceback" not in result.output


def test_missing_run_file(tmp_path: Path) -> None:
    result = invoke("estimate", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "absent.yaml: No such file or directory" in result.stderr


def test_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--aws", "--env", "staging", "runs")
    assert result.exit_code == 2
    assert "unknown environment 'staging'" in result.stderr


def test_local_commands_on_an_empty_platform(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    result = invoke("--local", "--state-dir", state, "runs", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    result = invoke("--local", "--state-dir", state, "watch", "nope")
    assert result.exit_code == 2
    assert "no run 'nope' on the local platform" in result.stderr
    result = invoke("--local", "--state-dir", state, "compare", "only-one")
    assert result.exit_code == 2
