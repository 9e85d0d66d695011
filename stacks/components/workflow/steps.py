"""Building blocks of the workflow's states: a Lambda step, a SageMaker step, a notification,
each with its retry policy and (given a failure path) its catch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.components.workflow import retries

JsonPath = sfn.JsonPath

__all__ = [
    "CHECKPOINT_LOCAL_PATH",
    "WorkflowResources",
    "catch",
    "lambda_step",
    "notify_step",
    "sagemaker_sdk_step",
    "sagemaker_step",
]

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


@dataclass(frozen=True, kw_only=True)
class WorkflowResources:
    """What the workflow's steps call and pass along."""

    launch_function: lambda_.IFunction
    record_function: lambda_.IFunction
    smoke_test_function: lambda_.IFunction
    topic: sns.ITopic
    training_role_arn: str
    model_role_arn: str
    key_arn: str
    subnet_ids: Sequence[str]
    security_group_id: str
    metric_definitions: Sequence[Mapping[str, str]]
    serving_image_uri: str
    data_capture_s3_uri: str
    mlflow_tracking_arn: str | None


def lambda_step(
    scope: Construct,
    name: str,
    function: lambda_.IFunction,
    payload: Mapping[str, Any],
    *,
    result_path: str | None,
    comment: str,
) -> tasks.LambdaInvoke:
    task = tasks.LambdaInvoke(
        scope,
        name,
        lambda_function=function,
        payload=sfn.TaskInput.from_object(dict(payload)),
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=result_path if result_path is not None else JsonPath.DISCARD,
        comment=comment,
    )
    task.add_retry(**retries.lambda_retry())
    return task


def sagemaker_step(
    scope: Construct,
    name: str,
    api: str,
    parameters: Mapping[str, Any],
    *,
    comment: str,
    result_path: str | None = None,
    result_selector: Mapping[str, Any] | None = None,
    retry_attempts: int = 3,
) -> sfn.CustomState:
    """An optimised SageMaker integration (``arn:<partition>:states:::sagemaker:<api>``).

    Hand-written ASL: the L2 ``SageMakerCreateTrainingJob`` task cannot take the input channels,
    stopping condition and resource config as JSONPaths, nor CheckpointConfig, ExperimentConfig
    and inter-container encryption; the other SageMaker tasks follow the same shape."""
    return _task(
        scope,
        name,
        f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:{api}",
        parameters,
        comment=comment,
        result_path=result_path,
        result_selector=result_selector,
        retry=retries.sagemaker_retry(max_attempts=retry_attempts),
    )


def sagemaker_sdk_step(
    scope: Construct,
    name: str,
    api: str,
    parameters: Mapping[str, Any],
    *,
    comment: str,
    result_path: str | None = None,
    result_selector: Mapping[str, Any] | None = None,
) -> sfn.CustomState:
    """An AWS SDK integration with SageMaker (``arn:<partition>:states:::aws-sdk:sagemaker:``).

    Hand-written ASL rather than ``tasks.CallAwsService``: the latter derives the IAM actions
    from the API name, which would duplicate (and widen) the state machine role's SageMaker
    grants that FineTuneWorkflow scopes to the platform's resource names."""
    return _task(
        scope,
        name,
        f"arn:{cdk.Aws.PARTITION}:states:::aws-sdk:sagemaker:{api}",
        parameters,
        comment=comment,
        result_path=result_path,
        result_selector=result_selector,
        retry=retries.sagemaker_sdk_retry(),
    )


def _task(
    scope: Construct,
    name: str,
    resource: str,
    parameters: Mapping[str, Any],
    *,
    comment: str,
    result_path: str | None,
    result_selector: Mapping[str, Any] | None,
    retry: dict[str, Any],
) -> sfn.CustomState:
    state: dict[str, Any] = {
        "Type": "Task",
        "Comment": comment,
        "Resource": resource,
        "Parameters": dict(parameters),
        # JsonPath.DISCARD renders as an explicit null: keep the input, drop the result.
        "ResultPath": result_path if result_path is not None else JsonPath.DISCARD,
    }
    if result_selector is not None:
        state["ResultSelector"] = dict(result_selector)
    custom = sfn.CustomState(scope, name, state_json=state)
    custom.add_retry(**retry)
    return custom


def catch(
    state: sfn.TaskStateBase | sfn.CustomState,
    on_failure: sfn.IChainable,
    *,
    result_path: str = "$.error",
) -> None:
    """Every error of ``state`` goes to ``on_failure`` with the error at ``result_path``."""
    state.add_catch(on_failure, errors=["States.ALL"], result_path=result_path)


def notify_step(
    scope: Construct, name: str, topic: sns.ITopic, message: str, subject: str
) -> tasks.SnsPublish:
    task = tasks.SnsPublish(
        scope,
        name,
        topic=topic,
        message=sfn.TaskInput.from_text(message),
        subject=subject,
        result_path=JsonPath.DISCARD,
    )
    task.add_retry(**retries.sns_retry())
    return task
