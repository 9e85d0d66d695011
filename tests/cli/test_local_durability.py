"""The local platform never loses a run: real ``finetune`` processes sharing one state folder,
launching, serving, promoting and listing at once, some killed with ``kill -9`` mid-run.

One scenario runs once for the module (every run trains the tiny model for two steps); the
tests below each check one property of what it left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.local.store import StateStore
from tests.cli.conftest import start_cli

pytestmark = pytest.mark.slow

DATASETS = "llmft-local-datasets-123456789012-us-east-1"
#: Generous: five runs share two cores.
TIMEOUT = 300.0


def run_file(folder: Path, name: str, *, deploy: bool) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"""run_name: {name}
experiment_name: durable
base_model: s3://{DATASETS}/base-models/tiny-llama/
model_parameters_billions: 0.0002
training:
  instance_type: ml.g5.xlarge
  spot: false
  max_runtime_hours: 1
hyperparameters:
  max_steps: 2
  per_device_train_batch_size: 8
  logging_steps: 1
deployment:
  enabled: {str(deploy).lower()}
  instance_type: ml.g5.xlarge
  endpoint_name: {name}
"""
    )
    return path


def invoke(state: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["--local", "--state-dir", str(state), *args], catch_exceptions=False
    )


def query(state: Path, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    """Read the store as another terminal would, while processes write to it."""
    path = state / "state.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        try:
            return list(db.execute(sql, parameters).fetchall())
        except sqlite3.OperationalError:  # the schema is being created
            return []


def states_of(state: Path, name: str) -> list[str]:
    rows = query(state, "SELECT states FROM executions WHERE name = ?", name)
    return json.loads(rows[0][0]) if rows else []


def kill_9(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the command, then what it started (the training job runs in a session of
    its own and would otherwise train on, orphaned)."""
    children = _descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


@dataclass
class Scenario:
    state: Path
    logs: Path
    exit_codes: dict[str, int] = field(default_factory=dict)
    killed_at: dict[str, list[str]] = field(default_factory=dict)
    listed_while_serving: list[dict[str, Any]] = field(default_factory=list)
    listed_after_kills: list[dict[str, Any]] = field(default_factory=list)
    retry: Any = None
    promote_again: Any = None
    watch_interrupted: Any = None

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("durability")
    state, logs = root / "state", root / "logs"
    logs.mkdir()
    files = {
        "dur-a": run_file(root, "dur-a", deploy=True),
        "dur-b": run_file(root, "dur-b", deploy=False),
        "dur-k1": run_file(root, "dur-k1", deploy=False),
        "dur-k2": run_file(root, "dur-k2", deploy=False),
    }
    scene = Scenario(state, logs)
    # Build the cached templates and tiny model once, rather than in five processes at once.
    from finetune.local.session import LocalSession

    LocalSession(state).templates()
    LocalSession.tiny_model()

    def launch(label: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
        return start_cli(state, "launch", str(files[name]), *extra, log=logs / f"{label}.log")

    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # Four terminals launch runs (the first then serves its endpoint); a fifth starts the
        # first one's request again while it runs. Two are killed mid-run.
        processes["dur-a"] = launch("dur-a", "dur-a", "--serve")
        _wait(lambda: bool(query(state, "SELECT 1 FROM executions WHERE name = 'dur-a'")), "a")
        processes["dur-a-again"] = launch("dur-a-again", "dur-a")
        for name in ("dur-b", "dur-k1", "dur-k2"):
            processes[name] = launch(name, name)
        _kill_at(
            scene,
            processes,
            {
                # During training: the job is running and has printed.
                "dur-k1": lambda: (
                    "Train model" in states_of(state, "dur-k1")
                    and any(p.stat().st_size for p in state.glob("jobs/dur-k1-a1/**/training.log"))
                ),
                # During registration: the package is committed, the run has not recorded it.
                "dur-k2": lambda: bool(
                    query(state, "SELECT 1 FROM packages WHERE run_id = 'dur-k2'")
                ),
            },
        )
        for name in ("dur-b", "dur-a-again"):
            scene.exit_codes[name] = processes[name].wait(timeout=TIMEOUT)
        _wait(lambda: "serving llmft-local-dur-a at" in scene.log("dur-a"), "serving")
        listed = invoke(state, "runs", "--json")
        assert listed.exit_code == 0, listed.output
        scene.listed_while_serving = json.loads(listed.stdout)

        # Two terminals promote at once; the one redeploying is killed during the deployment.
        for name in ("dur-a", "dur-b"):
            processes[f"promote-{name}"] = start_cli(
                state, "promote", name, log=logs / f"promote-{name}.log"
            )
        _kill_at(
            scene,
            processes,
            {
                "promote-dur-a": lambda: (
                    "Create model"
                    in [
                        s
                        for (states,) in query(
                            state, "SELECT states FROM executions WHERE kind = 'deploy'"
                        )
                        for s in json.loads(states)
                    ]
                )
            },
        )
        scene.exit_codes["promote-dur-b"] = processes["promote-dur-b"].wait(timeout=TIMEOUT)

        # SIGTERM the serving terminal (what closing it does): it stops, nothing is rewritten.
        processes["dur-a"].send_signal(signal.SIGTERM)
        scene.exit_codes["dur-a"] = processes["dur-a"].wait(timeout=60)

        listed = invoke(state, "runs", "--json")
        assert listed.exit_code == 0, listed.output
        scene.listed_after_kills = json.loads(listed.stdout)
        scene.watch_interrupted = invoke(state, "watch", "dur-k1")

        # The deployment interrupted mid-way, promoted again: its next attempt, same names.
        scene.promote_again = invoke(state, "promote", "dur-a", "--json")

        # The run interrupted during training, launched again: its next attempt.
        scene.retry = invoke(state, "launch", str(files["dur-k1"]), "--json")
    finally:
        for process in processes.values():
            if process.poll() is None:
                kill_9(process)
    return scene


def _kill_at(
    scene: Scenario,
    processes: dict[str, subprocess.Popen[bytes]],
    points: dict[str, Callable[[], bool]],
) -> None:
    """``kill -9`` each process as soon as its point is reached."""
    pending = dict(points)
    deadline = time.monotonic() + TIMEOUT
    while pending:
        for name, reached in list(pending.items()):
            if reached():
                scene.killed_at[name] = states_of(scene.state, name)
                kill_9(processes[name])
                del pending[name]
            elif processes[name].poll() is not None:
                raise AssertionError(f"{name} ended before its kill point: {scene.log(name)}")
        assert time.monotonic() < deadline, f"kill points not reached: {sorted(pending)}"
        time.sleep(0.02)


def _row(rows: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["run_id"] == run_id]
    return row


def test_concurrent_runs_keep_every_package_attributed_to_its_run(scenario: Scenario) -> None:
    assert scenario.exit_codes["dur-b"] == 0, scenario.log("dur-b")
    store = StateStore(scenario.state / "state.db")
    packages = store.packages()
    versions = sorted(p.version for p in packages)
    assert versions == list(range(1, len(packages) + 1))  # unique, none lost
    by_arn = {p.arn: p for p in packages}
    records = store.run_records()
    for run_id in ("dur-a", "dur-b", "dur-k1"):
        (arn,) = {
            m["model_package_arn"]
            for m in records[run_id]["milestones"]
            if m.get("model_package_arn")
        }
        assert by_arn[arn].metadata["run_id"] == run_id
    assert {p.metadata["run_id"] for p in packages} >= {"dur-a", "dur-b", "dur-k1", "dur-k2"}


def test_the_same_request_launched_twice_at_once_is_one_run(scenario: Scenario) -> None:
    assert scenario.exit_codes["dur-a-again"] == 0, scenario.log("dur-a-again")
    again = scenario.log("dur-a-again")
    assert "run dur-a: the same request is already running" in again
    assert "run dur-a: SUCCEEDED" in again
    # One job, in one folder, with one log.
    assert [p.name for p in (scenario.state / "jobs").glob("dur-a-*")] == ["dur-a-a1"]
    assert len(list((scenario.state / "jobs").glob("dur-a-a1/**/training.log"))) == 1


def test_a_serving_terminal_neither_hides_nor_overwrites_other_runs(scenario: Scenario) -> None:
    while_serving = {r["run_id"]: r["status"] for r in scenario.listed_while_serving}
    assert while_serving["dur-a"] == "completed"
    assert while_serving["dur-b"] == "completed"
    assert scenario.exit_codes["dur-a"] == 0, scenario.log("dur-a")
    assert "stopped serving" in scenario.log("dur-a")
    after = {r["run_id"]: r for r in scenario.listed_after_kills}
    assert after["dur-b"]["model_package"]  # B's package survived A's exit


def test_kill_9_at_any_point_leaves_the_run_listed_and_the_store_whole(
    scenario: Scenario,
) -> None:
    assert "Train model" in scenario.killed_at["dur-k1"]
    listed = {r["run_id"]: r["status"] for r in scenario.listed_after_kills}
    assert listed["dur-k1"] == "interrupted"
    assert listed["dur-k2"] in ("interrupted", "completed")
    # Killed while redeploying: completed, or interrupted if the deployment had recorded a step.
    assert listed["dur-a"] in ("completed", "interrupted")
    deploys = query(
        scenario.state, "SELECT status FROM executions WHERE kind = 'deploy' AND run_id = 'dur-a'"
    )
    assert deploys == [("INTERRUPTED",)] or deploys == [("SUCCEEDED",)]
    with sqlite3.connect(scenario.state / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    watched = scenario.watch_interrupted
    assert watched.exit_code == 1
    assert "run dur-k1: INTERRUPTED" in watched.stdout
    assert "launch the same request again to retry it" in watched.stdout


def test_an_interrupted_run_is_retried_as_its_next_attempt_in_a_new_folder(
    scenario: Scenario,
) -> None:
    retry = scenario.retry
    assert retry.exit_code == 0, retry.output
    assert "attempt 2: the earlier one was interrupted" in retry.stderr
    assert json.loads(retry.stdout)["status"] == "SUCCEEDED"
    jobs = sorted(p.name for p in (scenario.state / "jobs").glob("dur-k1-*"))
    assert jobs == ["dur-k1-a1", "dur-k1-a2"]
    store = StateStore(scenario.state / "state.db")
    record = store.run_record("dur-k1")
    assert record is not None
    assert [m["milestone"] for m in record["milestones"]] == [
        "started",
        "trained",
        "registered",
        "completed",
    ]
    assert store.attempts("dur-k1") == [
        {"attempt": 1, "status": "INTERRUPTED", "ended_at": store.attempts("dur-k1")[0]["ended_at"]}
    ]


def test_two_terminals_promoting_at_once_keep_both_packages_and_their_metadata(
    scenario: Scenario,
) -> None:
    assert scenario.exit_codes["promote-dur-b"] == 0, scenario.log("promote-dur-b")
    packages = {p.metadata["run_id"]: p for p in StateStore(scenario.state / "state.db").packages()}
    for name in ("dur-a", "dur-b"):  # A's approval was committed before its deploy was killed
        assert packages[name].status == "Approved"
        assert float(packages[name].metadata["eval_loss"]) > 0
        assert packages[name].metadata["training_job"] == f"llmft-local-{name}-a1"  # first attempt


def test_an_interrupted_deployment_is_retried_by_promoting_again(scenario: Scenario) -> None:
    again = scenario.promote_again
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["status"] == "SUCCEEDED"
    if "attempt 2: the earlier one was interrupted" not in again.stderr:
        # The kill came after the deployment ended: promoting again returns that deployment.
        assert "the same request already ran (SUCCEEDED)" in again.stderr
