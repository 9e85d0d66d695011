"""Every Task of the executed workflow fails in turn, and every service outcome AWS can report
instead of success happens: each execution must end handled - the run recorded as failed (unless
recording is what failed), a failure notification sent (unless sending is what failed), nothing
left half-deployed - and never in States.Runtime, which no Catch handles on AWS.

The Task states come from the synthesized definition: a new Task without a scenario that
reaches it fails ``test_every_task_state_is_walked``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from finetune.local.executions import ExecutionResult
from finetune.local.strict_asl import transient_error
from tests.infra.synth import Synthesized
from tests.report import report
from tests.workflow.conftest import Workflow
from tests.workflow.definition import state_machine_definition
from tests.workflow.test_execution import notifications, run_record

FAULT = ("Injected.ServiceFailure", "injected by the failure walk")
#: Where the failure path itself is tested, a primary failure takes the run there first.
PRIMARY = "CUDA out of memory (primary failure)"


@dataclass
class Scenario:
    """How to reach a state: optional set-up runs, then the run under test."""

    request: Callable[[Workflow], dict[str, Any]]
    before: Callable[[Workflow], None] = lambda flow: None
    #: The endpoint the run deploys to, and whether it existed before the run.
    endpoint: str | None = None
    endpoint_existed: bool = False
    #: The fault is in a state after the deployment was recorded: the endpoint stays.
    deployment_recorded: bool = False
    expect_record: bool = True
    expect_notification: bool = True
    #: The run under test undeploys the baseline's endpoint: a failure is recorded as a failed
    #: endpoint change of the baseline run, whose own status stays.
    undeploys: bool = False
    notes: list[str] = field(default_factory=list)


def _new_endpoint(flow: Workflow) -> dict[str, Any]:
    return flow.base_request(run_name="walk", deployment={"enabled": True, "endpoint_name": "new"})


def _update(flow: Workflow) -> dict[str, Any]:
    return flow.base_request(run_name="walk", deployment={"enabled": True, "endpoint_name": "chat"})


def _baseline(flow: Workflow) -> None:
    request = flow.base_request(
        run_name="base", deployment={"enabled": True, "endpoint_name": "chat"}
    )
    assert flow.run(request).status == "SUCCEEDED"


def _smoke_fails(flow: Workflow) -> None:
    _baseline(flow)
    flow.endpoints.broken_answers.add("llmft-local-chat")


def _new_endpoint_fails(flow: Workflow) -> None:
    flow.endpoints.failing_configs.add("llmft-local-walk")


def _training_fails(flow: Workflow) -> None:
    flow.training.failure_reason = PRIMARY


def _rejected(flow: Workflow) -> dict[str, Any]:
    return flow.base_request(run_name="walk", evaluation={"threshold": 0.5})


def _invalid(flow: Workflow) -> dict[str, Any]:
    return {"training": {"instance_type": "ml.t3.medium"}}


def _undeploy(flow: Workflow) -> dict[str, Any]:
    return {"undeploy": "chat"}


UNDEPLOY = Scenario(_undeploy, _baseline, endpoint="llmft-local-chat", undeploys=True)
NEW = Scenario(_new_endpoint, endpoint="llmft-local-new")
SCENARIOS: dict[str, Scenario] = {
    "Validate and resolve run": NEW,
    "Record run started": NEW,
    "Train model": NEW,
    "Record training and evaluation": NEW,
    "Register model": NEW,
    "Record registration": NEW,
    "Create model": NEW,
    "Create endpoint config": NEW,
    "Find current endpoint": NEW,
    "Create endpoint": NEW,
    "Check endpoint status": NEW,
    "Smoke test endpoint": NEW,
    "Record deployment": NEW,
    "Record completion": Scenario(
        _new_endpoint, endpoint="llmft-local-new", deployment_recorded=True
    ),
    "Notify run succeeded": Scenario(
        _new_endpoint, endpoint="llmft-local-new", deployment_recorded=True
    ),
    "Update endpoint": Scenario(
        _update, _baseline, endpoint="llmft-local-chat", endpoint_existed=True
    ),
    "Restore previous endpoint config": Scenario(
        _update, _smoke_fails, endpoint="llmft-local-chat", endpoint_existed=True
    ),
    "Check restored endpoint": Scenario(
        _update, _smoke_fails, endpoint="llmft-local-chat", endpoint_existed=True
    ),
    "Delete failed endpoint": Scenario(
        _new_endpoint, _new_endpoint_fails, endpoint="llmft-local-new"
    ),
    "Check endpoint before rollback": Scenario(
        _new_endpoint, _new_endpoint_fails, endpoint="llmft-local-new"
    ),
    "Record gate rejection": Scenario(_rejected),
    "Notify gate rejection": Scenario(_rejected),
    "Record failure": Scenario(_new_endpoint, _training_fails, expect_record=False),
    "Notify run failed": Scenario(_new_endpoint, _training_fails, expect_notification=False),
    "Record invalid request": Scenario(_invalid, expect_record=False),
    "Check endpoint before undeploy": UNDEPLOY,
    "Delete endpoint": UNDEPLOY,
    "Record undeploy": UNDEPLOY,
    "Notify endpoint undeployed": UNDEPLOY,
}


def task_resources(synthesized: Synthesized) -> dict[str, str]:
    states = state_machine_definition(synthesized)["States"]
    return {name: state["Resource"] for name, state in states.items() if state["Type"] == "Task"}


def task_states(synthesized: Synthesized) -> list[str]:
    return sorted(task_resources(synthesized))


#: States of a rollback: a fault there comes on top of the failure being rolled back.
ROLLBACK_STATES = (
    "Restore previous endpoint config",
    "Check restored endpoint",
    "Delete failed endpoint",
    "Check endpoint before rollback",
)


def test_every_task_state_is_walked(local_templates: Synthesized) -> None:
    tasks = task_states(local_templates)
    assert sorted(SCENARIOS) == tasks
    report("failure walk", f"{len(tasks)} Task states, each failed in turn")


def assert_handled(flow: Workflow, result: ExecutionResult, state: str, scenario: Scenario) -> None:
    """Recorded, notified, nothing left running - and the cause is the real one."""
    assert result.status == "FAILED", f"{state}: {result.status}"
    assert result.error != "States.Runtime", f"{state}: {result.cause}"
    assert state in flow.faults.fired, f"{state} was never reached"
    error_text = f"{result.error} {result.cause}"
    if scenario.undeploys:
        _assert_undeploy_handled(flow, state, error_text)
        return
    if state in ROLLBACK_STATES:
        # The run failed first (smoke test, endpoint); the fault hit its rollback, which the
        # record keeps beside the original error.
        record = run_record(flow, "walk")
        assert record["milestones"][-1]["error"]["rollback"]["Error"] == FAULT[0], state
    elif state != "Record invalid request":
        primary = PRIMARY if scenario.before is _training_fails else FAULT[1]
        assert primary in error_text or FAULT[0] in error_text, f"{state}: {error_text[:300]}"
    if scenario.expect_record and state != "Validate and resolve run":
        record = run_record(flow, "walk")
        assert record["status"] == "failed", f"{state}: recorded {record['status']}"
    if scenario.expect_notification:
        assert any("failed" in message for message in notifications(flow)), state
    if scenario.endpoint is None:
        return
    sagemaker = flow.client("sagemaker")
    endpoints = {e["EndpointName"]: e for e in sagemaker.list_endpoints()["Endpoints"]}
    if state in ("Delete failed endpoint", "Check endpoint before rollback"):
        return  # it could not be deleted: the record says so (above)
    if scenario.endpoint_existed:
        endpoint = _settled(sagemaker, scenario.endpoint)
        assert endpoint["EndpointStatus"] == "InService", state
        if state not in ("Restore previous endpoint config", "Check restored endpoint"):
            assert endpoint["EndpointConfigName"].startswith("llmft-local-base-"), state
    elif scenario.deployment_recorded:
        assert endpoints[scenario.endpoint]["EndpointStatus"] == "InService", state
    else:
        assert scenario.endpoint not in endpoints, f"{state}: {scenario.endpoint} left behind"


def _assert_undeploy_handled(flow: Workflow, state: str, error_text: str) -> None:
    """An undeploy that failed: the baseline run is still completed, its record has the failed
    endpoint change, the failure is announced; the endpoint stays unless it was deleted."""
    assert FAULT[0] in error_text or FAULT[1] in error_text, f"{state}: {error_text[:300]}"
    record = run_record(flow, "base")
    assert record["status"] == "completed", state
    last = record["endpoint_changes"][-1]
    assert (last["change"], last["error"]["Error"]) == ("undeploy-failed", FAULT[0]), state
    assert any("failed" in message for message in notifications(flow)), state
    endpoints = [e["EndpointName"] for e in flow.client("sagemaker").list_endpoints()["Endpoints"]]
    deleted = state in ("Record undeploy", "Notify endpoint undeployed")
    assert ("llmft-local-chat" in endpoints) != deleted, state


def test_every_task_retries_what_its_service_reports_when_busy(
    workflow: Workflow, local_templates: Synthesized
) -> None:
    """Each Task of a deploying run fails once with the error its integration reports for
    throttling or an internal error (the twin's naming, not the workflow's retry lists): the
    run still succeeds, so every Retry names what AWS actually reports."""
    machine = workflow.client("stepfunctions").describe_state_machine(
        stateMachineArn=workflow.platform.state_machine_arn
    )
    states = json.loads(machine["definition"])["States"]
    resources = {name: s["Resource"] for name, s in states.items() if s["Type"] == "Task"}
    assert sorted(resources) == task_states(local_templates)
    for name, resource in resources.items():
        workflow.faults.transient[name] = (transient_error(resource), "Rate exceeded")

    result = workflow.run(_new_endpoint(workflow))

    assert result.status == "SUCCEEDED", f"{result.error}: {result.cause}"
    retried = sorted(set(workflow.faults.fired))
    happy_path_tasks = sorted({s for s in result.states if s in resources})
    assert retried == happy_path_tasks
    report("failure walk", f"{len(retried)} Task states retried a throttled call and went on")


def _settled(sagemaker: Any, name: str) -> dict[str, Any]:
    """The endpoint once out of Creating/Updating (a restore the run started goes on after the
    run ended, as on SageMaker)."""
    for _ in range(5):
        endpoint: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=name)
        if endpoint["EndpointStatus"] not in ("Creating", "Updating"):
            return endpoint
    raise AssertionError(f"{name} never settled")


@pytest.mark.parametrize("state", sorted(SCENARIOS))
def test_a_failure_in_each_task_is_handled(workflow: Workflow, state: str) -> None:
    scenario = SCENARIOS[state]
    scenario.before(workflow)
    workflow.faults.faults[state] = FAULT

    result = workflow.run(scenario.request(workflow))

    assert_handled(workflow, result, state, scenario)
    report("failure walk", f"fault in {state!r}: ended {result.error}, handled")


@dataclass(frozen=True)
class Outcome:
    """A service reports something other than success."""

    name: str
    setup: Callable[[Workflow], None]
    request: Callable[[Workflow], dict[str, Any]]
    error: str
    endpoint: str | None = None
    endpoint_existed: bool = False


def _stopped(flow: Workflow) -> None:
    flow.training.status = "Stopped"


def _update_rollback_failed(flow: Workflow) -> None:
    _baseline(flow)
    flow.endpoints.update_outcomes["llmft-local-walk"] = "UpdateRollbackFailed"


def _update_fails(flow: Workflow) -> None:
    _baseline(flow)
    flow.endpoints.failing_configs.add("llmft-local-walk")


def _restore_fails(flow: Workflow) -> None:
    _smoke_fails(flow)
    flow.endpoints.failing_configs.add("llmft-local-base")


OUTCOMES = [
    Outcome("training job Failed", _training_fails, _new_endpoint, "RunFailed"),
    Outcome("training job Stopped", _stopped, _new_endpoint, "TrainingNotCompleted"),
    Outcome(
        "new endpoint Failed",
        _new_endpoint_fails,
        _new_endpoint,
        "EndpointFailed",
        "llmft-local-new",
    ),
    Outcome(
        "update Failed (SageMaker rolls back)",
        _update_fails,
        _update,
        "EndpointUpdateFailed",
        "llmft-local-chat",
        True,
    ),
    Outcome("update UpdateRollbackFailed", _update_rollback_failed, _update, "EndpointUnusable"),
    Outcome("restore Failed", _restore_fails, _update, "SmokeTestFailed"),
]


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: o.name)
def test_each_non_success_a_service_reports_is_handled(
    workflow: Workflow, outcome: Outcome
) -> None:
    outcome.setup(workflow)

    result = workflow.run(outcome.request(workflow))

    assert result.status == "FAILED"
    assert result.error == outcome.error, result.cause
    assert run_record(workflow, "walk")["status"] == "failed"
    assert any("failed" in message for message in notifications(workflow))
    endpoints = {
        e["EndpointName"]: e for e in workflow.client("sagemaker").list_endpoints()["Endpoints"]
    }
    if outcome.endpoint is not None and not outcome.endpoint_existed:
        assert outcome.endpoint not in endpoints
    elif outcome.endpoint is not None:
        assert endpoints[outcome.endpoint]["EndpointStatus"] == "InService"
    report("failure walk", f"service outcome {outcome.name!r}: ended {result.error}, handled")
