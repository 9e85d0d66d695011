"""Training attempts, executed: capacity failures are retried by the workflow under a new job
name from the run's checkpoints (bounded, with backoff); other failures are not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from finetune.local.moto_patches import TrainingOutcome
from runspec.attempts import is_capacity_failure
from tests.infra.synth import Synthesized
from tests.report import report
from tests.workflow.conftest import Workflow, _workflow
from tests.workflow.test_execution import notifications, packages, run_record

#: SageMaker's texts (runspec.attempts cites where each is documented).
CAPACITY_ERROR = TrainingOutcome(
    status="Failed",
    failure_reason="CapacityError: Unable to provision requested ML compute capacity. "
    "Please retry using a different ML instance type.",
)
SPOT_WAIT_EXPIRED = TrainingOutcome(status="Stopped", secondary_status="MaxWaitTimeExceeded")
BAD_DATA = TrainingOutcome(
    status="Failed",
    failure_reason="AlgorithmError: ExecuteUserScriptError: ValueError: train.jsonl line 3: "
    "'messages' must be a list",
)


def _job_names(flow: Workflow) -> list[str]:
    return [job["TrainingJobName"] for job in flow.training.jobs]


def test_capacity_failures_are_retried_as_new_attempts_of_one_run(workflow: Workflow) -> None:
    workflow.training.next_outcomes = [CAPACITY_ERROR, SPOT_WAIT_EXPIRED]

    result = workflow.run(workflow.base_request(run_name="capacity"))

    assert result.status == "SUCCEEDED", result.cause
    stem = "llmft-local-capacity"
    assert _job_names(workflow) == [f"{stem}-a1", f"{stem}-a2", f"{stem}-a3"]
    # Every attempt resumes from the run's one checkpoint location and logs to its MLflow run.
    assert {job["CheckpointConfig"]["S3Uri"] for job in workflow.training.jobs} == {
        f"s3://{workflow.platform.artifacts_bucket}/checkpoints/capacity/"
    }
    assert {job["Environment"]["FT_RUN_ID"] for job in workflow.training.jobs} == {"capacity"}
    assert result.states.count("Next training attempt") == 2
    assert "Capacity failure?" in result.states  # the Failed job: its cause was read
    run = result.output["run"]  # type: ignore[index]
    assert run["attempt"]["number"] == 3
    assert run["attempt"]["capacity_retries"] == 2

    record = run_record(workflow, "capacity")
    assert [m["milestone"] for m in record["milestones"]] == [
        "started",
        "trained",
        "registered",
        "completed",
    ]
    attempts = [
        (a["training_job_name"], a["status"], a["capacity_failure"]) for a in record["attempts"]
    ]
    assert attempts == [
        (f"{stem}-a1", "Failed", True),
        (f"{stem}-a2", "Stopped", True),
        (f"{stem}-a3", "Completed", False),
    ]
    assert record["attempts"][0]["failure_reason"].startswith("CapacityError")
    assert record["attempts"][1]["secondary_status"] == "MaxWaitTimeExceeded"
    (package,) = packages(workflow)
    assert package["CustomerMetadataProperties"]["training_job"] == f"{stem}-a3"
    # The run's trial holds the job that trained the model.
    components = workflow.client("sagemaker").list_trial_components(TrialName=run["trial_name"])
    names = {c["TrialComponentName"] for c in components["TrialComponentSummaries"]}
    assert f"{stem}-a3-aws-training-job" in names
    report("attempts", "2 capacity failures (CapacityError, spot wait) -> attempt 3 trained")


def test_a_failure_that_capacity_would_not_fix_is_not_retried(workflow: Workflow) -> None:
    workflow.training.next_outcomes = [BAD_DATA]

    result = workflow.run(workflow.base_request(run_name="bad-data"))

    assert result.status == "FAILED"
    assert result.error == "RunFailed"
    assert "ValueError" in str(result.cause)
    assert _job_names(workflow) == ["llmft-local-bad-data-a1"]
    assert "Next training attempt" not in result.states
    record = run_record(workflow, "bad-data")
    assert record["status"] == "failed"
    (attempt,) = record["attempts"]
    assert attempt["status"] == "Failed"
    assert attempt["capacity_failure"] is False


def test_capacity_retries_are_bounded_and_the_run_says_how_to_resume(workflow: Workflow) -> None:
    workflow.training.next_outcomes = [CAPACITY_ERROR] * 3

    result = workflow.run(workflow.base_request(run_name="no-capacity"))

    assert result.status == "FAILED"
    assert result.error == "TrainingCapacityUnavailable"
    assert "finetune retry no-capacity" in str(result.cause)
    # The local platform's configuration: two retries, so three attempts.
    assert len(workflow.training.jobs) == 3
    record = run_record(workflow, "no-capacity")
    assert record["status"] == "failed"
    assert [a["capacity_failure"] for a in record["attempts"]] == [True, True, True]
    assert any("no-capacity" in message for message in notifications(workflow))


@pytest.fixture
def stopped_jobs_fail(local_templates: Synthesized, mlflow_store: str) -> Iterator[Workflow]:
    """Step Functions reports a Stopped job as a failed task (the other way it may report it)."""
    yield from _workflow(local_templates, mlflow_store, stopped_jobs="fail")


def test_a_spot_wait_reported_as_a_task_failure_is_retried(stopped_jobs_fail: Workflow) -> None:
    flow = stopped_jobs_fail
    flow.training.next_outcomes = [SPOT_WAIT_EXPIRED]

    result = flow.run(flow.base_request(run_name="spot-wait"))

    assert result.status == "SUCCEEDED", result.cause
    assert _job_names(flow) == ["llmft-local-spot-wait-a1", "llmft-local-spot-wait-a2"]
    assert "Capacity failure?" in result.states


def test_the_workflow_and_the_record_agree_on_what_capacity_is() -> None:
    """The state machine matches the cause text; the record classifies the job: one rule."""
    described: list[dict[str, Any]] = [
        {"TrainingJobStatus": "Failed", "FailureReason": CAPACITY_ERROR.failure_reason},
        {"TrainingJobStatus": "Failed", "FailureReason": "InsufficientCapacityError: ..."},
        {"TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxWaitTimeExceeded"},
    ]
    not_capacity: list[dict[str, Any]] = [
        {"TrainingJobStatus": "Failed", "FailureReason": BAD_DATA.failure_reason},
        {"TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: CUDA out of memory"},
        {"TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxRuntimeExceeded"},
        {"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"},
    ]
    assert all(is_capacity_failure(job) for job in described)
    assert not any(is_capacity_failure(job) for job in not_capacity)
    from fnmatch import fnmatchcase

    from runspec.attempts import cause_patterns

    def matched(job: dict[str, Any], separators: tuple[str, str]) -> bool:
        cause = json.dumps(job, separators=separators)
        return any(fnmatchcase(cause, pattern) for pattern in cause_patterns())

    for separators in ((",", ":"), (", ", ": ")):
        assert all(matched(job, separators) for job in described)
        assert not any(matched(job, separators) for job in not_capacity)
