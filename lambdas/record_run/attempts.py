"""The run record's account of its training attempts: one entry per SageMaker training job the
run made (``<stem>-a1``, ``-a2``, ...), how each ended and why.

SageMaker is asked (DescribeTrainingJob), not the workflow's state: a failed attempt left no
state behind but its job. An attempt SageMaker does not know (its CreateTrainingJob was refused,
or, on the local platform, made by an earlier process) keeps what the record already says of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runspec.attempts import attempt_job_name, is_capacity_failure
from runspec.run import RunDocument

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

__all__ = ["current_job_name", "recorded_attempts", "resumed"]

#: FailureReason is at most 1,024 characters (DescribeTrainingJob); the record keeps it whole.
_REASON_LIMIT = 1024


def current_job_name(run: RunDocument) -> str:
    """The training job of the run's current attempt."""
    return run.attempt.training_job_name


def _job_names(run: RunDocument) -> list[tuple[int, str]]:
    attempt = run.attempt
    if attempt.stem == attempt.training_job_name:  # a run from before attempts: one job
        return [(1, attempt.training_job_name)]
    return [(n, attempt_job_name(attempt.stem, n)) for n in range(1, attempt.number + 1)]


def recorded_attempts(
    sagemaker: SageMakerClient, run: RunDocument, known: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every attempt up to the current one, oldest first: ``known`` (the record's) updated with
    what SageMaker says of each job now."""
    by_name = {entry["training_job_name"]: entry for entry in known}
    for number, name in _job_names(run):
        try:
            job: Any = sagemaker.describe_training_job(TrainingJobName=name)
        except Exception:  # noqa: S112 - ResourceNotFound (class per client): keep what is known
            continue
        by_name[name] = _attempt(number, job)
    return sorted(by_name.values(), key=lambda entry: int(entry["attempt"]))


def _attempt(number: int, job: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": number,
        "training_job_name": job["TrainingJobName"],
        "status": job["TrainingJobStatus"],
        "secondary_status": job.get("SecondaryStatus"),
        "capacity_failure": is_capacity_failure(job),
    }
    if job.get("FailureReason"):
        entry["failure_reason"] = str(job["FailureReason"])[:_REASON_LIMIT]
    if job.get("BillableTimeInSeconds") is not None:
        entry["billable_seconds"] = int(job["BillableTimeInSeconds"])
    return entry


def resumed(run: RunDocument) -> dict[str, Any]:
    """What a retry's start adds to the record: which retry, in which execution, from where."""
    assert run.resume is not None
    return {
        "retry": run.resume.retry,
        "resumed_from": run.resume.step,
        "execution_name": run.execution_name,
        "attempt": run.attempt.number,
    }
