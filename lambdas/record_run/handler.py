"""Record function: one milestone of a run into SageMaker Experiments and the S3 run record.

Event: ``{"milestone": "...", "run": {...} | null, "execution_name": "...", ...details}``.
For ``trained`` it returns the job's metrics, the gate's decision and the model package
metadata. Every milestone is added to the run's MLflow run too when ``FT_MLFLOW_TRACKING_URI``
names the platform's MLflow App (record_run.mlflow_rest).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from record_run import logic
from record_run.mlflow_rest import MlflowRest
from runspec.run import RunDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient

logger = Logger(service="record-run")
tracer = Tracer(service="record-run")


class RecordEvent(BaseModel):
    # Details vary by milestone (training, evaluation, error, ...): kept as given.
    model_config = ConfigDict(extra="allow")

    milestone: logic.Milestone
    run: RunDocument | None = None
    execution_name: str | None = None


#: The MLflow App the record function adds the later facts of a run to (unset: MLflow is off).
MLFLOW_ENV = "FT_MLFLOW_TRACKING_URI"


@functools.cache
def _clients() -> logic.Clients:
    sagemaker: SageMakerClient = boto3.client("sagemaker")
    s3: S3Client = boto3.client("s3")
    tracking = os.environ.get(MLFLOW_ENV, "").strip()
    mlflow = MlflowRest(tracking) if tracking else None
    return logic.Clients(sagemaker=sagemaker, s3=s3, mlflow=mlflow)


@event_parser(model=RecordEvent)
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def handler(event: RecordEvent, context: LambdaContext) -> dict[str, Any]:
    details = dict(event.model_extra or {})
    result = logic.record_milestone(
        _clients(),
        artifacts_bucket=os.environ["FT_ARTIFACTS_BUCKET"],
        milestone=event.milestone,
        run=event.run,
        details=details,
        execution_name=event.execution_name,
    )
    logger.info(
        "milestone recorded",
        extra={"milestone": event.milestone, "run_id": event.run.run_id if event.run else None},
    )
    return result
