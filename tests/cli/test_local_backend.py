"""The local demo end to end (real training, real workflow, local endpoint), then the CLI's
commands against what it recorded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.local.store import StateStore

pytestmark = pytest.mark.slow


def invoke(state: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["--local", "--state-dir", str(state), *args], catch_exceptions=False
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    state = tmp_path_factory.mktemp("finetune-state")
    result = invoke(state, "demo", "--json")
    assert result.exit_code == 0, result.output
    return state / "demo", json.loads(result.stdout)


def test_demo_trains_two_runs_and_marks_the_better_one(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, rows = demo
    assert {r["run_id"] for r in rows} == {"demo-lr-3e-4", "demo-lr-3e-3"}
    assert all(r["status"] == "completed" for r in rows)
    assert all(r["endpoint"] == "llmft-local-demo" for r in rows)
    (best,) = [r for r in rows if r["best"]]
    assert best["eval_loss"] == min(r["eval_loss"] for r in rows)
    assert all(r["eval_loss"] < r["train_loss"] + 2 for r in rows)


def test_runs_are_recorded_with_pinned_data_and_a_servable_model(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    state, _ = demo
    store = StateStore(state / "state.db")
    record = store.run_record("demo-lr-3e-3")
    assert record is not None
    (pinned,) = record["run"]["datasets"]["train"]["objects"]
    assert pinned["version_id"]
    assert pinned["etag"]
    (artifacts,) = {o.bucket for o in _objects(store) if "-artifacts-" in o.bucket}
    model = "models/demo-lr-3e-3/llmft-local-demo-lr-3e-3-a1/output/model/"
    keys = store.object_keys(artifacts, model)
    assert f"{model}model.safetensors" in keys
    assert f"{model}tokenizer.json" in keys
    milestones = [m["milestone"] for m in record["milestones"]]
    assert milestones == ["started", "trained", "registered", "deployed", "completed"]
    smoke = next(m for m in record["milestones"] if m["milestone"] == "deployed")["smoke_test"]
    assert smoke["generated_text"]
    # Each attempt trains in a folder of its own.
    assert sorted(p.name for p in (state / "jobs").iterdir()) == [
        "demo-lr-3e-3-a1",
        "demo-lr-3e-4-a1",
    ]


def _objects(store: StateStore) -> list[Any]:
    with sqlite3.connect(store.path) as db:
        buckets = [row[0] for row in db.execute("SELECT DISTINCT bucket FROM objects")]
    return [obj for bucket in buckets for obj in store.objects(bucket)]


def test_mlflow_store_has_both_runs_with_params_and_metric_curves(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    state, _ = demo
    with sqlite3.connect(state / "mlflow.db") as db:
        runs = dict(db.execute("SELECT name, run_uuid FROM runs").fetchall())
        assert set(runs) == {"demo-lr-3e-4", "demo-lr-3e-3"}
        steps = db.execute(
            "SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND key = 'train_loss'",
            (runs["demo-lr-3e-3"],),
        ).fetchone()[0]
        assert steps >= 5
        (learning_rate,) = db.execute(
            "SELECT value FROM params WHERE run_uuid = ? AND key = 'learning_rate'",
            (runs["demo-lr-3e-3"],),
        ).fetchone()
        assert float(learning_rate) == 0.003


def test_runs_compare_and_watch_read_the_local_records(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    state, rows = demo
    listed = invoke(state, "runs", "--json")
    assert listed.exit_code == 0
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [r["run_id"] for r in rows]

    compared = invoke(state, "compare", "demo-lr-3e-3", "demo-lr-3e-4", "--json")
    assert compared.exit_code == 0
    parameters = {r["run_id"]: r["parameters"] for r in json.loads(compared.stdout)}
    assert parameters["demo-lr-3e-3"]["learning_rate"] == "0.003"
    assert parameters["demo-lr-3e-4"]["lora_r"] == "8"

    watched = invoke(state, "watch", "demo-lr-3e-4", "--json")
    assert watched.exit_code == 0
    outcome = json.loads(watched.stdout)
    assert outcome["status"] == "SUCCEEDED"
    assert outcome["states"][-1] == "Run succeeded"
    assert "Smoke test endpoint" in outcome["states"]
    # The second run found the first run's endpoint (kept in the store) and updated it.
    second = json.loads(invoke(state, "watch", "demo-lr-3e-3", "--json").stdout)
    assert "Update endpoint" in second["states"]
    assert "Create endpoint" not in second["states"]

    table = invoke(state, "runs")
    assert "★" in table.stdout
    assert "demo-lr-3e-3" in table.stdout


def test_promote_approves_and_redeploys_the_run(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    state, _ = demo
    result = invoke(state, "promote", "demo-lr-3e-4", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "SUCCEEDED"
    assert outcome["states"][2:4] == ["Train or deploy?", "Use the registered model"]
    packages = StateStore(state / "state.db").packages()
    assert {p.status for p in packages} == {"Approved"}
    # Promoting keeps what the package says about its run: must_beat_best_approved reads it.
    assert {p.metadata["run_id"] for p in packages} == {"demo-lr-3e-4", "demo-lr-3e-3"}
    assert all(float(p.metadata["eval_loss"]) > 0 for p in packages)


def test_endpoints_lists_what_serves_and_undeploy_deletes_it(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    state, _ = demo
    listed = invoke(state, "endpoints", "--json")
    assert listed.exit_code == 0, listed.output
    (endpoint,) = json.loads(listed.stdout)
    assert endpoint["name"] == "llmft-local-demo"
    assert endpoint["run_id"] in {"demo-lr-3e-4", "demo-lr-3e-3"}

    result = invoke(state, "undeploy", "demo", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["states"][-1] == "Endpoint undeployed"
    assert json.loads(invoke(state, "endpoints", "--json").stdout) == []
    rows = json.loads(invoke(state, "runs", "--json").stdout)
    assert {r["run_id"] for r in rows} == {"demo-lr-3e-4", "demo-lr-3e-3"}  # no extra run
    served = next(r for r in rows if r["run_id"] == endpoint["run_id"])
    assert served["status"] == "completed"


def test_retry_resumes_only_runs_that_did_not_finish(
    demo: tuple[Path, list[dict[str, Any]]],
) -> None:
    """`finetune retry` reaches the launch's retry resolution (tests/workflow/test_retry.py
    executes the resumed paths); a completed run and an unknown one are refused, exit 2."""
    state, _ = demo
    completed = invoke(state, "retry", "demo-lr-3e-4")
    assert completed.exit_code == 2, completed.output
    assert "ended completed: there is nothing to retry" in completed.output
    unknown = invoke(state, "retry", "never-launched")
    assert unknown.exit_code == 2, unknown.output
    assert "no run 'never-launched' is recorded" in unknown.output
    rows = json.loads(invoke(state, "runs", "--json").stdout)
    assert {r["run_id"] for r in rows} == {"demo-lr-3e-4", "demo-lr-3e-3"}


def test_a_run_the_platform_refuses_exits_2_without_training(
    demo: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    state, _ = demo
    run_file = tmp_path / "run.yaml"
    run_file.write_text("base_model: meta-llama/Llama-3.1-8B\n")
    result = invoke(state, "launch", str(run_file))
    assert result.exit_code == 2
    assert "is a Hugging Face Hub id, but this platform has no internet egress" in result.stderr
