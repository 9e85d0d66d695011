"""``finetune estimate``: the table for every instance count, instances without GPUs, the JSON
shape, and exit 2 whenever the launch function would refuse the run. In-process, no platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from stacks.config import load_config

LLAMA_70B = "meta-llama/Llama-3.1-70B"


def run(tmp_path: Path, request: dict[str, Any], *options: str) -> Any:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(request))
    return CliRunner().invoke(app, ["estimate", str(path), *options], catch_exceptions=False)


def test_the_table_of_an_instance_without_a_gpu(tmp_path: Path) -> None:
    result = run(tmp_path, {"training": {"instance_type": "ml.m5.xlarge", "instance_count": 2}})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "has no GPU" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "ml.m5.xlarge ×" in line]
    assert len(rows) == load_config("dev").max_training_instances
    assert all("no (no GPU)" in row for row in rows)
    assert "cheapest configuration that fits: ml.g" in result.stdout
    assert result.stderr.startswith("error: ")
    assert "training.instance_type: 'ml.m5.xlarge' is not allowed" in result.stderr
    assert "hint: ml.g" in result.stderr


def test_each_instance_count_with_its_strategy_speedup_and_cost(tmp_path: Path) -> None:
    request = {
        "base_model": LLAMA_70B,
        "training": {"instance_type": "ml.g5.12xlarge", "instance_count": 4},
        "hyperparameters": {"per_device_train_batch_size": 1},
    }
    result = run(tmp_path, request)
    assert result.exit_code == 0, result.output
    table = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    for count, gpus in ((1, 4), (2, 8), (3, 12), (4, 16)):
        label = f"ml.g5.12xlarge ×{count}" + (" (requested)" if count == 4 else "")
        cells = [cell.strip() for cell in table[label].split("│")[2:-1]]
        assert cells[0] == str(gpus)
        assert cells[1] == "fsdp"
        assert cells[3] == ("yes" if count == 4 else "no (GPU memory)")
        assert cells[4].endswith("×")
    assert "strategy: fsdp (131.4 GiB of frozen weights exceed half" in result.stdout
    assert "cheapest configuration that fits: ml.g6e.12xlarge ×2" in result.stdout


def test_json_is_the_typed_estimate(tmp_path: Path) -> None:
    request = {
        "training": {"instance_type": "ml.g5.12xlarge"},
        "hyperparameters": {"max_steps": 10},
    }
    result = run(tmp_path, request, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["problems"] == []
    assert data["tokens_basis"].startswith("max_steps")
    requested = data["requested"]
    assert (requested["instance_type"], requested["instance_count"]) == ("ml.g5.12xlarge", 1)
    assert requested["world_size"] == 4
    assert requested["fit"]["strategy"]["strategy"] == "ddp"
    assert requested["fit"]["memory"]["strategy"] == "ddp"
    assert requested["speedup"]["factor"] == pytest.approx(4 * 0.95)
    assert data["tokens"] == 10 * 4 * 1024 * 4  # steps x micro-batch x max_seq_length x GPUs
    counts = [entry["instance_count"] for entry in data["by_instance_count"]]
    assert counts == list(range(1, load_config("dev").max_training_instances + 1))
    assert data["recommended"]["fit"]["fits"] is True


def test_nothing_fits_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, {"base_model": "acme/giant-2000b"})
    assert result.exit_code == 2
    assert "Nothing this platform allows fits this run." in result.stdout
    assert "hint: nothing this platform allows fits this run" in result.stderr


def test_more_instances_than_the_platform_allows_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, {"training": {"instance_count": 16}}, "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    (problem,) = data["problems"]
    assert problem.startswith("training.instance_count: 16 instances are more than")
    assert "training.instance_count: 16" in result.stderr
