"""Retried runs, executed: ``{"retry_run": "<run id>"}`` resumes a failed run at its first step
that did not complete (runspec.retry), as one run with one record; training, when it must be
repeated, is a new attempt from the run's checkpoints."""

from __future__ import annotations

import pytest

from runspec.request import RunRequestError
from tests.report import report
from tests.workflow.conftest import Workflow
from tests.workflow.launching import start
from tests.workflow.test_attempts import CAPACITY_ERROR
from tests.workflow.test_execution import packages, run_record

FAULT = ("Injected.ServiceFailure", "injected: the service failed")


def milestones(flow: Workflow, run_id: str) -> list[str]:
    return [m["milestone"] for m in run_record(flow, run_id)["milestones"]]


def test_a_record_that_failed_after_training_resumes_without_training_again(
    workflow: Workflow,
) -> None:
    workflow.faults.faults["Record training and evaluation"] = FAULT
    failed = workflow.run(workflow.base_request(run_name="rec"))
    assert failed.status == "FAILED"
    (job,) = workflow.training.jobs
    # The failure is recorded with the job that completed.
    assert run_record(workflow, "rec")["milestones"][-1]["training"]["status"] == "Completed"

    del workflow.faults.faults["Record training and evaluation"]
    started, result = start(workflow, {"retry_run": "rec"})

    assert result.status == "SUCCEEDED", result.cause
    assert started["execution_arn"].endswith(":rec-retry-1")
    assert started["resume"] == "recording"
    assert "Train model" not in result.states
    assert "Resume with the completed job" in result.states
    assert workflow.training.jobs == [job]  # no second training job
    assert milestones(workflow, "rec") == [
        "started",
        "failed",
        "started",
        "trained",
        "registered",
        "completed",
    ]
    record = run_record(workflow, "rec")
    retried = record["milestones"][2]
    assert (retried["retry"], retried["resumed_from"]) == (1, "recording")
    assert record["milestones"][3]["training"]["training_job_name"] == "llmft-local-rec-a1"
    (package,) = packages(workflow)
    assert package["CustomerMetadataProperties"]["run_id"] == "rec"
    report("retry", "record failed after training -> retry recorded it, no second job")


def test_a_run_out_of_capacity_retries_as_its_next_attempt_from_its_checkpoints(
    workflow: Workflow,
) -> None:
    workflow.training.next_outcomes = [CAPACITY_ERROR] * 3
    assert workflow.run(workflow.base_request(run_name="cap")).status == "FAILED"

    _, result = start(workflow, {"retry_run": "cap"})

    assert result.status == "SUCCEEDED", result.cause
    names = [job["TrainingJobName"] for job in workflow.training.jobs]
    assert names == [f"llmft-local-cap-a{n}" for n in (1, 2, 3, 4)]
    assert {job["CheckpointConfig"]["S3Uri"] for job in workflow.training.jobs} == {
        f"s3://{workflow.platform.artifacts_bucket}/checkpoints/cap/"
    }
    record = run_record(workflow, "cap")
    assert [a["status"] for a in record["attempts"]] == ["Failed"] * 3 + ["Completed"]
    assert record["milestones"][2]["resumed_from"] == "training"
    assert record["milestones"][2]["attempt"] == 4


def test_a_failed_registration_resumes_at_registration(workflow: Workflow) -> None:
    workflow.faults.faults["Register model"] = FAULT
    assert workflow.run(workflow.base_request(run_name="reg")).status == "FAILED"
    del workflow.faults.faults["Register model"]

    _, result = start(workflow, {"retry_run": "reg"})

    assert result.status == "SUCCEEDED", result.cause
    assert "Record training and evaluation" not in result.states
    assert result.states.count("Register model") == 1
    assert len(workflow.training.jobs) == 1
    (package,) = packages(workflow)
    assert package["CustomerMetadataProperties"]["training_job"] == "llmft-local-reg-a1"
    assert milestones(workflow, "reg")[-3:] == ["started", "registered", "completed"]


def test_only_runs_that_did_not_finish_can_be_retried(workflow: Workflow) -> None:
    assert workflow.run(workflow.base_request(run_name="done")).status == "SUCCEEDED"

    with pytest.raises(RunRequestError, match="ended completed: there is nothing to retry"):
        start(workflow, {"retry_run": "done"})
    with pytest.raises(RunRequestError, match="no run 'never' is recorded"):
        start(workflow, {"retry_run": "never"})
