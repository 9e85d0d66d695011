"""One local run with a test set, end to end: the job scores the merged model on it, the record
function decides the gate from what it measured, MLflow holds the evaluation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.local.store import StateStore

pytestmark = pytest.mark.slow
BUCKET = "llmft-local-datasets-123456789012-us-east-1"


def test_a_local_run_is_scored_on_its_test_set_and_gated_on_task_metrics(tmp_path: Path) -> None:
    request = {
        "run_name": "eval-e2e",
        "experiment_name": "evaluation",
        "base_model": f"s3://{BUCKET}/base-models/tiny-llama/",
        "model_parameters_billions": 0.0002,
        "training": {"instance_type": "ml.g5.xlarge", "spot": False, "max_runtime_hours": 1},
        "hyperparameters": {"max_steps": 12, "learning_rate": 0.003, "logging_steps": 4},
        "evaluation": {
            "dataset": f"s3://{BUCKET}/datasets/default/validation.jsonl",
            "gate": {
                "rules": ["exact_match >= 0", "token_f1 >= 0", "eval_loss <= 50"],
                "must_beat_best_approved": ["exact_match"],
            },
        },
    }
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(request))
    state = tmp_path / "state"

    result = CliRunner().invoke(
        app,
        ["--local", "--state-dir", str(state), "launch", str(run_file), "--json"],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    record = StateStore(state / "state.db").run_record("eval-e2e")
    assert record is not None
    assert record["run"]["datasets"]["test"]["objects"][0]["version_id"]
    trained = next(m for m in record["milestones"] if m["milestone"] == "trained")
    metrics = trained["metrics"]
    for name in ("eval_loss", "perplexity", "exact_match", "token_f1", "rougeL", "json_valid"):
        assert name in metrics, name
    assert trained["scoring"]["dataset"] == "test"
    assert len(trained["scoring"]["data_sha256"]) == 64
    assert trained["test_set"]["rows"] > 0
    assert trained["test_set"]["version_id"]
    assert len(trained["tokenizer"]["sha256"]) == 64
    gate = trained["evaluation"]
    assert gate["passed"] is True
    assert [r["rule"] for r in gate["rules"]] == request["evaluation"]["gate"]["rules"]  # type: ignore[index]
    assert gate["best_approved"][0]["best_approved_value"] is None  # nothing approved yet
    assert trained["package_metadata"]["scored_data_sha256"] == trained["scoring"]["data_sha256"]

    with sqlite3.connect(state / "mlflow.db") as db:
        (run_uuid,) = db.execute("SELECT run_uuid FROM runs WHERE name = 'eval-e2e'").fetchone()
        assert trained["mlflow_run_id"] == run_uuid
        keys = {k for (k,) in db.execute("SELECT key FROM metrics WHERE run_uuid = ?", (run_uuid,))}
        assert {"train_loss", "evaluation.exact_match", "evaluation.eval_loss"} <= keys
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_uuid,)))
        assert tags["scored.data_sha256"] == trained["scoring"]["data_sha256"]
        assert tags["library.rouge-score"] == "0.1.2"
        assert "evaluation_examples.json" in tags["mlflow.loggedArtifacts"]
        params = {
            k for (k,) in db.execute("SELECT key FROM params WHERE run_uuid = ?", (run_uuid,))
        }
        assert "learning_rate" in params
        inputs = {
            name
            for (name,) in db.execute(
                "SELECT d.name FROM datasets d JOIN inputs i ON i.source_id = d.dataset_uuid "
                "WHERE i.destination_id = ?",
                (run_uuid,),
            )
        }
        assert {"train", "test"} <= inputs
    examples = list((state / "mlflow-artifacts").rglob("evaluation_examples.json"))
    assert examples
    table = json.loads(examples[0].read_text())
    assert table["columns"][:4] == ["source", "prompt", "reference", "prediction"]
