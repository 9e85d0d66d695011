"""Spot restarts: an interrupted job resumes from its newest complete checkpoint, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_sft.metrics import parse_metric_lines
from llm_sft.trainer import INTERRUPT_ENV

from .conftest import RunMain

pytestmark = pytest.mark.slow


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy, inside mlflow's store
def test_interrupted_job_resumes_exactly(
    run_main: RunMain, chat_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = tmp_path / "checkpoints"
    hps = {
        "train_dir": str(chat_subset / "train"),
        "validation_dir": str(chat_subset / "validation"),
        "max_steps": 8,
        "save_steps": 2,
        "logging_steps": 1,
        "lora_dropout": 0.1,  # exercises the restored RNG state
        "checkpoint_dir": str(checkpoints),
    }

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "resume-tests")
    monkeypatch.setenv(INTERRUPT_ENV, "5")
    first = run_main(hps, base=tmp_path / "attempt1")
    assert first.exit_code == 1
    assert first.failure is not None
    assert first.failure.startswith("Interrupted: simulated interruption after step 5")
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "mlflow_run.json",
    ]

    # A checkpoint whose save was cut short (no completion marker) must be skipped.
    partial = checkpoints / "checkpoint-6"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"truncated")

    monkeypatch.delenv(INTERRUPT_ENV)
    second = run_main(hps, base=tmp_path / "attempt2")
    assert second.exit_code == 0, second.output
    assert "resuming from step 4" in second.output
    assert "ignoring incomplete checkpoint" in second.output
    steps = [
        m.step for m in parse_metric_lines(second.output.splitlines()) if "train_loss" in m.values
    ]
    assert steps[0] == 5
    assert second.evaluation["global_step"] == 8
    assert second.evaluation["resumed_from_step"] == 4

    # One MLflow run for the job: the restart continued the interrupted attempt's run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("resume-tests")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted({m.step for m in history}) == list(range(1, 9))

    # The same job, never interrupted, ends in the same place.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    reference = run_main({**hps, "checkpoint_dir": str(tmp_path / "fresh")}, base=tmp_path / "ref")
    assert reference.exit_code == 0
    for key in ("eval_loss", "train_loss", "train_tokens", "global_step"):
        assert second.evaluation[key] == pytest.approx(reference.evaluation[key], rel=1e-5), key


def test_checkpoint_from_another_configuration_is_refused(
    run_main: RunMain, chat_subset: Path, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    hps = {"train_dir": str(chat_subset / "train"), "max_steps": 2, "save_steps": 2}
    done = run_main({**hps, "checkpoint_dir": str(checkpoints)}, base=tmp_path / "a")
    assert done.exit_code == 0
    state = json.loads((checkpoints / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    other = run_main(
        {**hps, "checkpoint_dir": str(checkpoints), "learning_rate": 1e-4}, base=tmp_path / "b"
    )
    assert other.exit_code == 1
    assert other.failure is not None
    assert "written by a different configuration (differs in: optimizer)" in other.failure
