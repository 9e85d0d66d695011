"""Where a retried run starts again: the first step its run record does not show completed.

Resuming is driven by the run record (``runs/<run id>/run.json``, written by the platform's
record function only), not by Step Functions' RedriveExecution:

- Every failure in the workflow is caught and ends in the failure path (record, notify, Fail):
  a redrive restarts an execution at the state that failed it, which is that final Fail state
  or a recording step, never the step that failed first (StepFunctions developer guide,
  "Redriving executions": "the redriven execution ... restarts from the unsuccessful state").
- Redrive keeps the execution's definition version and input and is available for 14 days
  after the execution ended; a run retried after a fix to the platform, or later, would not
  be. A stopped run (``finetune stop``: StopExecution) must resume too.
- A training attempt cannot simply be redone: SageMaker never reuses a job name, so a resumed
  training step is a new attempt (``<stem>-a<N+1>``), which the launch function names.

So a retry is a new execution (``<run id>-retry-<n>``) whose launch step reads the record and
writes ``$.run.resume`` (runspec.run.Resume): the step to start at and what the completed steps
produced, which the workflow puts back in place of running them (Pass states) - a failed record
after training does not train again, a failed registration does not evaluate again.
"""

from __future__ import annotations

import re
from typing import Any

from runspec.attempts import attempt_job_name, attempt_stem
from runspec.request import RunRequestError
from runspec.run import Resume, RunDocument, TrainedRecord, TrainingAttempt

__all__ = [
    "RETRYABLE_STATUSES",
    "next_attempt_number",
    "resume_point",
    "retried_run",
    "retry_execution_name",
    "retry_number",
]

#: A run record's status when its run may be retried: it failed or was stopped, or its
#: execution ended without recording an end (aborted from the console, timed out).
RETRYABLE_STATUSES = ("failed", "stopped", "started", "trained", "registered", "deployed")
#: Statuses of runs that ended as they should: nothing to retry.
_FINISHED = ("completed", "rejected")
_RETRY_NAME = re.compile(r"-retry-(\d+)$")
#: Step Functions execution names are at most 80 characters.
_EXECUTION_NAME_LENGTH = 80


def _last(record: dict[str, Any], milestone: str) -> dict[str, Any] | None:
    found = [m for m in record.get("milestones", []) if m.get("milestone") == milestone]
    return found[-1] if found else None


def _completed_training(record: dict[str, Any]) -> dict[str, Any] | None:
    """The newest ``$.training`` of a job that completed, as a milestone recorded it (the
    trained milestone, or a failure after training)."""
    for milestone in reversed(record.get("milestones", [])):
        training = milestone.get("training")
        if isinstance(training, dict) and training.get("status") == "Completed":
            return training
    return None


def resume_point(record: dict[str, Any], *, deploys: bool) -> tuple[str, dict[str, Any]]:
    """The step to resume the recorded run at, and what its completed steps produced
    (``training``, ``recorded``, ``registration``). ``deploys``: the run asks for an endpoint.
    Raises RunRequestError when the run has nothing to retry."""
    run_id = record.get("run_id")
    status = record.get("status")
    if status in _FINISHED:
        raise RunRequestError(
            [f"retry_run: run {run_id!r} ended {status}: there is nothing to retry"]
        )
    trained = _last(record, "trained")
    registered = _last(record, "registered")
    deployed = _last(record, "deployed")
    produced: dict[str, Any] = {}
    if trained is not None and (trained.get("evaluation") or {}).get("passed") is True:
        produced["training"] = trained.get("training")
        produced["recorded"] = {k: trained[k] for k in TrainedRecord.model_fields if k in trained}
        if registered is None:
            return "registration", produced
        produced["registration"] = {"model_package_arn": str(registered["model_package_arn"])}
        if deploys and deployed is None:
            return "deployment", produced
        return "completion", produced
    training = _completed_training(record)
    if training is not None:
        return "recording", {"training": training}
    return "training", {}


def next_attempt_number(record: dict[str, Any], run: RunDocument) -> int:
    """After the newest attempt the record knows of (its attempts, and the run's own)."""
    numbers = [int(a.get("attempt", 0)) for a in record.get("attempts", [])]
    numbers.append(run.attempt.number)
    return max(numbers) + 1


def retry_number(record: dict[str, Any]) -> int:
    """How many times the run was retried before, plus one."""
    retries = [
        int(m.get("retry", 0))
        for m in record.get("milestones", [])
        if m.get("milestone") == "started"
    ]
    return max([0, *retries]) + 1


def retry_execution_name(run_id: str, number: int) -> str:
    """``<run id>-retry-<n>`` (the run id shortened if the name would pass 80 characters)."""
    suffix = f"-retry-{number}"
    return f"{run_id[: _EXECUTION_NAME_LENGTH - len(suffix)]}{suffix}"


def retried_run(
    record: dict[str, Any], *, prefix: str, execution_name: str | None
) -> tuple[RunDocument, Resume]:
    """The recorded run, ready to resume: its attempt (a new one when training is repeated, the
    completed one otherwise) and ``resume``. The caller names its deployment resources (they
    derive from the execution)."""
    run = RunDocument.model_validate(record["run"])
    step, produced = resume_point(record, deploys=run.deployment.enabled)
    matched = _RETRY_NAME.search(execution_name or "")
    number = int(matched.group(1)) if matched else retry_number(record)
    stem = run.attempt.stem
    if run.attempt.training_job_name == stem:
        # Recorded before attempts: its one job had the stem's name; attempts get a stem that
        # leaves room for their suffix.
        stem = attempt_stem(prefix, run.run_id)
    if step == "training":
        attempt_number = next_attempt_number(record, run)
        name = attempt_job_name(stem, attempt_number)
    else:
        name = str((produced.get("training") or {}).get("training_job_name") or "")
        found = re.search(r"-a(\d+)$", name)
        attempt_number = int(found.group(1)) if found else run.attempt.number
    attempt = TrainingAttempt(number=attempt_number, training_job_name=name, stem=stem)
    resume = Resume.model_validate({"step": step, "retry": number, **produced})
    return run.model_copy(update={"attempt": attempt, "resume": resume}), resume
