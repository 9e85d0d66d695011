"""Training attempts: one run, several SageMaker training jobs when capacity fails it.

SageMaker keeps a training job's name taken forever (unless the job is deleted), so a run that
trains again needs a new name: attempt N of a run trains as ``<stem>-a<N>``, where the stem is
``<prefix>-<run id>`` (shortened, with a digest, when that would not leave room for the suffix
in SageMaker's 63 characters). Every attempt writes to and resumes from the run's one checkpoint
location (``checkpoints/<run id>/``), so a new attempt continues where the last one stopped.

What counts as a capacity failure, retried by the workflow under a new attempt (bounded, with
backoff), and where it is documented:

- the job ``Failed`` with a FailureReason that begins with ``CapacityError`` (AWS Batch user
  guide, "Jobs stuck in RUNNABLE due to capacity": "Training job fails with capacity error:
  FAILED, failedReason begins with CapacityError"; SageMaker's text is "CapacityError: Unable
  to provision requested ML compute capacity. ..."), or with ``InsufficientCapacityError`` (the
  name SageMaker Automatic Model Tuning's instance-fallback announcement gives the same failure,
  "ICE");
- the job ``Stopped`` with SecondaryStatus ``MaxWaitTimeExceeded`` (DescribeTrainingJob:
  "MaxWaitTimeExceeded - The job stopped because it exceeded the maximum allowed wait time";
  the same Batch page: "Training job times out waiting for capacity: STOPPED, secondaryStatus
  indicates the job timed out in pending waiting for capacity"): managed spot training that
  did not get (or keep) spot capacity within MaxWaitTimeInSeconds.

Everything else is not retried: an AlgorithmError (bad data, a ValueError, CUDA out of memory)
fails the same way again, ``MaxRuntimeExceeded`` needs a longer limit, ``ClientError`` a
different request, and a job stopped by someone (SecondaryStatus ``Stopped``) was meant to stop.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = [
    "ATTEMPT_SUFFIX_LENGTH",
    "CAPACITY_FAILURE_PREFIXES",
    "CAPACITY_SECONDARY_STATUSES",
    "MAX_BACKOFF_SECONDS",
    "MAX_CAPACITY_RETRIES",
    "attempt_job_name",
    "attempt_stem",
    "backoff_schedule",
    "cause_patterns",
    "is_capacity_failure",
]

#: SageMaker's limit for training job names.
_NAME_LENGTH = 63
#: ``-a<N>`` with N up to 999: the most attempts a run can make, user retries included.
ATTEMPT_SUFFIX_LENGTH = len("-a999")
#: How often the workflow retries capacity failures in one execution, at most (the platform
#: configures fewer); the execution timeout is derived from it (finetune_workflow.RUN_TIMEOUT).
MAX_CAPACITY_RETRIES = 5
#: The longest wait between two attempts: backoff doubles up to this.
MAX_BACKOFF_SECONDS = 3600

#: FailureReason prefixes of a job that failed for want of capacity.
CAPACITY_FAILURE_PREFIXES = ("CapacityError", "InsufficientCapacityError")
#: SecondaryStatus of a job stopped for want of (spot) capacity.
CAPACITY_SECONDARY_STATUSES = ("MaxWaitTimeExceeded",)


def attempt_stem(prefix: str, run_id: str) -> str:
    """``<prefix>-<run id>``, or, when that leaves no room for ``-a<N>``, its first characters
    and 8 hex of its digest (two long run ids that share a beginning keep distinct stems)."""
    stem = f"{prefix}-{run_id}"
    room = _NAME_LENGTH - ATTEMPT_SUFFIX_LENGTH
    if len(stem) <= room:
        return stem
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    return f"{stem[: room - len(digest) - 1].rstrip('-')}-{digest}"


def attempt_job_name(stem: str, number: int) -> str:
    """The training job of attempt ``number`` (the workflow writes the same with States.Format)."""
    return f"{stem}-a{number}"


def backoff_schedule(retries: int, first_seconds: int) -> list[int]:
    """The wait before each capacity retry: ``first_seconds``, then doubling, at most
    ``MAX_BACKOFF_SECONDS`` (capacity comes back in minutes to hours, not seconds)."""
    return [min(first_seconds * 2**index, MAX_BACKOFF_SECONDS) for index in range(retries)]


def is_capacity_failure(job: dict[str, Any]) -> bool:
    """Whether a DescribeTrainingJob response is a capacity failure (see the module docstring)."""
    status = job.get("TrainingJobStatus")
    if status == "Failed":
        reason = str(job.get("FailureReason") or "")
        return reason.startswith(CAPACITY_FAILURE_PREFIXES)
    if status == "Stopped":
        return job.get("SecondaryStatus") in CAPACITY_SECONDARY_STATUSES
    return False


def cause_patterns() -> list[str]:
    """Step Functions ``StringMatches`` patterns that find a capacity failure in the Cause of a
    failed ``.sync`` training task (the job's DescribeTrainingJob response as JSON). Anchored on
    the field names, and written both with and without a space after the colon: the JSON's
    spacing is the serializer's, not part of the API."""
    fields = [("FailureReason", f"{prefix}*") for prefix in CAPACITY_FAILURE_PREFIXES]
    fields += [("SecondaryStatus", f'{status}"*') for status in CAPACITY_SECONDARY_STATUSES]
    return [f'*"{name}":{space}"{value}' for name, value in fields for space in ("", " ")]
