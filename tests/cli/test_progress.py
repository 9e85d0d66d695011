"""The live progress line: the ETA is the pace since training started logging."""

from __future__ import annotations

import pytest

from finetune import progress as progress_module
from finetune.progress import RunProgress
from llm_sft.metrics import format_metric_line


def test_no_eta_from_the_first_logged_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to read 'ETA 0m00s' as soon as the first step was logged."""
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    run = RunProgress(total_steps=100)
    run.enter("Train model")
    run.on_log_line(format_metric_line(10, train_loss=2.0))
    assert run.eta_seconds() is None
    assert "ETA" not in run.line()
    clock[0] = 130.0  # 20 more steps in 30 s: 1.5 s a step, 70 steps to go
    run.on_log_line(format_metric_line(30, train_loss=1.5))
    assert run.eta_seconds() == pytest.approx(105.0)
    assert "ETA 1m45s" in run.line()


def test_eta_from_epochs_when_steps_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    run = RunProgress(epochs=2.0)
    run.on_log_line(format_metric_line(1, epoch=0.5, train_loss=2.0))
    clock[0] = 60.0
    run.on_log_line(format_metric_line(2, epoch=1.0, train_loss=1.8))
    assert run.eta_seconds() == pytest.approx(120.0)
