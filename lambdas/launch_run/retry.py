"""Retry a run: ``{"retry_run": "<run id>"}`` resolved from its run record (runspec.retry says
where it resumes and why the record, not RedriveExecution), and started as the run's next retry
execution.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from runspec.naming import deployment_resource_name
from runspec.objects import read_json_if_exists
from runspec.request import RunRequestError, parse_retry_request
from runspec.retry import retried_run, retry_execution_name, retry_number
from runspec.run import RunDocument
from runspec.settings import PlatformSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

__all__ = ["resolve_retry", "start_retry"]

#: How many retry execution names to try past ones that ended without recording anything (a
#: retry refused by its own launch step leaves the record as it was).
_NAMES_TRIED = 10


def _record(s3: S3Client, settings: PlatformSettings, run_id: str) -> dict[str, Any]:
    record = read_json_if_exists(s3, settings.artifacts_bucket, f"runs/{run_id}/run.json")
    if record is None:
        raise RunRequestError(
            [
                f"retry_run: no run {run_id!r} is recorded (a request the launch refused never "
                "became a run: fix it and launch it again)"
            ]
        )
    return record


def resolve_retry(
    payload: object,
    settings: PlatformSettings,
    *,
    s3: S3Client,
    execution_name: str | None,
) -> RunDocument:
    """The recorded run with ``resume`` (where it starts again) and its attempt, and the
    deployment names of this execution (SageMaker refuses to create a model or endpoint config
    under a name an earlier execution of the run used)."""
    request = parse_retry_request(payload)
    record = _record(s3, settings, request.retry_run)
    run, _resume = retried_run(record, prefix=settings.prefix, execution_name=execution_name)
    name = execution_name or retry_execution_name(run.run_id, retry_number(record))
    names = deployment_resource_name(settings.prefix, run.run_id, name)
    deployment = run.deployment.model_copy(
        update={"model_name": names, "endpoint_config_name": names}
    )
    return run.model_copy(update={"execution_name": name, "deployment": deployment})


def _arn(settings: PlatformSettings, name: str) -> str:
    return settings.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def _running(
    sfn: SFNClient, settings: PlatformSettings, record: dict[str, Any], first: int
) -> str | None:
    """The run's execution that is still running, if any: its first, or an earlier retry."""
    run_id = str(record["run_id"])
    names = [str(record.get("run", {}).get("execution_name") or run_id)]
    names += [retry_execution_name(run_id, n) for n in range(1, first + _NAMES_TRIED)]
    for name in dict.fromkeys(names):
        try:
            status = sfn.describe_execution(executionArn=_arn(settings, name))["status"]
        except sfn.exceptions.ExecutionDoesNotExist:
            continue
        if status == "RUNNING":
            return name
    return None


def start_retry(
    payload: object,
    settings: PlatformSettings,
    *,
    sfn: SFNClient,
    s3: S3Client,
) -> dict[str, Any]:
    """Start the run's next retry execution (``<run id>-retry-<n>``) once the request resolves
    (nothing starts when the run has nothing to retry). A retry already running is returned
    instead of a second one."""
    request = parse_retry_request(payload)
    record = _record(s3, settings, request.retry_run)
    execution_input = json.dumps(request.model_dump(mode="json"))
    first = retry_number(record)
    running = _running(sfn, settings, record, first)
    if running is not None:
        raise RunRequestError(
            [
                f"retry_run: run {request.retry_run!r} is still running ({running}); stop it "
                "first (finetune stop) or let it end"
            ]
        )
    for number in range(first, first + _NAMES_TRIED):
        name = retry_execution_name(request.retry_run, number)
        resolved = resolve_retry(payload, settings, s3=s3, execution_name=name)
        arn = _arn(settings, name)
        try:
            started = sfn.start_execution(
                stateMachineArn=settings.state_machine_arn, name=name, input=execution_input
            )
        except sfn.exceptions.ExecutionAlreadyExists:
            existing = sfn.describe_execution(executionArn=arn)
            if existing["status"] == "RUNNING":
                return {
                    "run_id": request.retry_run,
                    "execution_arn": arn,
                    "started": False,
                    "status": "RUNNING",
                }
            continue  # that retry ended before it recorded anything: the next name
        return {
            "run_id": request.retry_run,
            "execution_arn": started["executionArn"],
            "started": True,
            "resume": resolved.resume.step if resolved.resume else None,
        }
    raise RunRequestError(
        [
            f"retry_run: run {request.retry_run!r} was retried {_NAMES_TRIED} times without "
            "getting further; look at its failures (finetune runs) before retrying again"
        ]
    )
