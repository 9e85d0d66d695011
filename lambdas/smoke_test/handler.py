"""Smoke-test function: one generation request against the run's endpoint.

Event: ``{"endpoint_name": "..."}``. Raises ``SmokeTestFailed`` when the endpoint does not answer
with generated text; the workflow then rolls the endpoint back.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from smoke_test import logic

logger = Logger(service="smoke-test")
tracer = Tracer(service="smoke-test")


class SmokeEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_name: str = Field(min_length=1, max_length=63)


@functools.cache
def _runtime() -> Any:
    return boto3.client("sagemaker-runtime")


@event_parser(model=SmokeEvent)
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def handler(event: SmokeEvent, context: LambdaContext) -> dict[str, Any]:
    result = logic.smoke_test(_runtime(), event.endpoint_name)
    logger.info("smoke test passed", extra=result)
    return result
