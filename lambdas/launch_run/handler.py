"""Launch function: resolve a run inside the workflow, or start the workflow for a request.

Events:
    ``{"request": {...}, "execution_name": "..."}`` (from the state machine) -> the resolved run;
    a request ``{"deploy_run": "<run id>"}`` resolves to the deployment of that run's model;
    ``{"approved_package": "<ARN>"}`` (the approval rule) to what is done about the approval;
    ``{"undeploy": "<endpoint or run id>"}`` / ``{"idle_alarm": ...}`` to the endpoint's deletion;
    ``{"retry_run": "<run id>"}`` to the recorded run, resumed where it stopped (launch_run.retry).
    ``{"action": "start", "request": {...}}`` (from people or tools) -> the started execution.
Invalid requests raise ``RunRequestInvalid``; its message lists every ``field: rule``.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Literal

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from launch_run import logic
from launch_run.retry import resolve_retry
from launch_run.undeploy import resolve_undeploy
from runspec.request import (
    RunRequestError,
    is_approval_request,
    is_deploy_request,
    is_retry_request,
    is_undeploy_request,
)
from runspec.settings import PlatformSettings

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_stepfunctions import SFNClient

logger = Logger(service="launch-run")
tracer = Tracer(service="launch-run")


class RunRequestInvalid(Exception):  # noqa: N818 - the error name Step Functions shows and catches
    """The run request is invalid; nothing was started."""


class LaunchEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["resolve", "start"] = "resolve"
    request: dict[str, Any] | None = None
    execution_name: str | None = None


@functools.cache
def _s3() -> S3Client:
    return boto3.client("s3")


@functools.cache
def _ecr() -> ECRClient:
    return boto3.client("ecr")


@functools.cache
def _sagemaker() -> SageMakerClient:
    return boto3.client("sagemaker")


@functools.cache
def _cloudwatch() -> Any:
    return boto3.client("cloudwatch")


@functools.cache
def _stepfunctions() -> SFNClient:
    return boto3.client("stepfunctions")


@event_parser(model=LaunchEvent)
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def handler(event: LaunchEvent, context: LambdaContext) -> dict[str, Any]:
    settings = PlatformSettings.from_env(os.environ)
    try:
        if event.action == "start":
            result = logic.start_run(
                event.request,
                settings,
                sfn=_stepfunctions(),
                s3=_s3(),
                ecr=_ecr(),
                sagemaker=_sagemaker(),
            )
            logger.info("run started", extra=result)
            return result
        if is_approval_request(event.request):
            run = logic.resolve_approval(
                event.request,
                settings,
                s3=_s3(),
                sagemaker=_sagemaker(),
                sfn=_stepfunctions(),
                ecr=_ecr(),
            )
        elif is_undeploy_request(event.request):
            run = resolve_undeploy(
                event.request,
                settings,
                s3=_s3(),
                sagemaker=_sagemaker(),
                cloudwatch=_cloudwatch(),
                execution_name=event.execution_name,
            )
        elif is_retry_request(event.request):
            run = resolve_retry(
                event.request, settings, s3=_s3(), execution_name=event.execution_name
            )
        elif is_deploy_request(event.request):
            run = logic.resolve_deployment(
                event.request,
                settings,
                s3=_s3(),
                sagemaker=_sagemaker(),
                execution_name=event.execution_name,
            )
        else:
            run = logic.resolve_run(
                event.request,
                settings,
                execution_name=event.execution_name,
                s3=_s3(),
                ecr=_ecr(),
            )
    except RunRequestError as error:
        logger.warning("invalid run request", extra={"problems": error.problems})
        raise RunRequestInvalid("; ".join(error.problems)) from None
    logger.info("run resolved", extra={"run_id": run.run_id, "mode": run.mode})
    return run.to_state()
