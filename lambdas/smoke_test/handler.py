"""Smoke-test function: the run's endpoint answers, and computes what training computed.

Event: ``{"endpoint_name": "...", "model_artifacts": "s3://.../output/model/"}``.
``model_artifacts`` (the training job's uncompressed model folder) is optional: without it only
the generation check runs. With it the function reads ``serving_reference.json`` there and
compares the endpoint's prompt log-probabilities with the training stack's (see logic). Raises
``SmokeTestFailed`` on any failure; the workflow then rolls the endpoint back.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from smoke_test import logic

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

logger = Logger(service="smoke-test")
tracer = Tracer(service="smoke-test")


class SmokeEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_name: str = Field(min_length=1, max_length=63)
    model_artifacts: str | None = Field(default=None, pattern=r"^s3://[^/]+(/.*)?$")


@functools.cache
def _runtime() -> SageMakerRuntimeClient:
    return boto3.client("sagemaker-runtime")


@functools.cache
def _s3() -> S3Client:
    return boto3.client("s3")


@event_parser(model=SmokeEvent)
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def handler(event: SmokeEvent, context: LambdaContext) -> dict[str, Any]:
    if event.model_artifacts is None:
        logger.warning("no model_artifacts: the endpoint is not compared with training")
    result = logic.smoke_test(
        _runtime(),
        event.endpoint_name,
        s3=_s3() if event.model_artifacts is not None else None,
        model_artifacts=event.model_artifacts,
    )
    logger.info("smoke test passed", extra=result)
    return result
