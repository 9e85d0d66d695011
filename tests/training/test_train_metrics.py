"""METRIC lines and the MetricDefinitions that SageMaker applies to them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from llm_sft.metrics import (
    METRIC_DEFINITIONS,
    apply_metric_definitions,
    format_final_line,
    format_metric_line,
    parse_metric_line,
)

from .conftest import REPO


def test_definitions_shape() -> None:
    names = [d["Name"] for d in METRIC_DEFINITIONS]
    assert set(names) >= {
        "train_loss", "eval_loss", "perplexity", "learning_rate", "tokens_per_second", "epoch",
    }  # fmt: skip
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        assert re.compile(definition["Regex"]).groups == 1


def test_line_format() -> None:
    line = format_metric_line(
        20, train_loss=1.23456789, learning_rate=1.9e-4, tokens_per_second=5321.25, epoch=0.5
    )
    assert line == (
        "METRIC step=20 train_loss=1.23457 learning_rate=0.00019"
        " tokens_per_second=5321.25 epoch=0.5"
    )
    assert format_metric_line(3, eval_loss=None, epoch=1.0) == "METRIC step=3 epoch=1"
    assert format_final_line(eval_loss=1.5, perplexity=4.48169, train_loss=2.0) == (
        "METRIC final eval_loss=1.5 perplexity=4.48169 train_loss=2"
    )
    with pytest.raises(ValueError, match="unknown metric"):
        format_metric_line(1, loss=1.0)


def test_regexes_do_not_cross_match() -> None:
    lines = [
        format_metric_line(
            10, train_loss=2.5, learning_rate=1e-5, tokens_per_second=100.0, epoch=0.1
        ),
        format_metric_line(10, eval_loss=1.75, epoch=0.1),
        format_final_line(eval_loss=1.5, perplexity=4.5, train_loss=2.25, tokens_per_second=99.0),
        "INFO something train_loss=9 eval_loss=9",  # not a METRIC line
        "[1,0]<stdout>:" + format_metric_line(11, train_loss=2.0),  # MPI-prefixed line
    ]
    found = apply_metric_definitions(lines)
    assert found["train_loss"] == [2.5, 2.25, 2.0]
    assert found["eval_loss"] == [1.75, 1.5]
    assert found["perplexity"] == [4.5]
    assert found["learning_rate"] == [1e-5]
    assert found["tokens_per_second"] == [100.0, 99.0]
    assert found["epoch"] == [0.1, 0.1]


def test_nan_emits_nothing() -> None:
    line = format_metric_line(5, train_loss=float("nan"), epoch=1.0)
    assert line == "METRIC step=5 train_loss=nan epoch=1"
    assert apply_metric_definitions([line])["train_loss"] == []


def test_parse_round_trip() -> None:
    record = parse_metric_line("2024 INFO " + format_metric_line(7, eval_loss=0.5, epoch=2.0))
    assert record is not None
    assert (record.step, record.final, record.values) == (
        7,
        False,
        {"eval_loss": 0.5, "epoch": 2.0},
    )
    final = parse_metric_line(format_final_line(perplexity=3.0))
    assert final is not None
    assert (final.step, final.final, final.values) == (None, True, {"perplexity": 3.0})
    assert parse_metric_line("no metric here") is None


def test_contract_modules_import_without_torch() -> None:
    """The stacks, the launch Lambda and the local runner import these without ML libraries;
    the entry point validates data before importing them."""
    code = (
        "import sys, llm_sft.metrics, llm_sft.hyperparameters, finetune.local_training\n"
        "import llm_sft.cli, llm_sft.training  # bad data must fail before the ML imports\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'training_code'}", "PATH": ""},
    )
