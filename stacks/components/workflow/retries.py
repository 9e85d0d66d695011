"""Retry policies (``add_retry`` keyword arguments), one per kind of call, each tuned to the
limit it respects."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_stepfunctions as sfn

#: Errors Lambda's Invoke API returns when the service, not the function, failed. Invoke is
#: throttled at the account's concurrency (and our reserved concurrency of 10): back off with full
#: jitter so that concurrent runs do not retry in lockstep.
LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]

#: SageMaker control-plane calls (Create*/Describe*/Update*) share per-account TPS quotas (a few
#: calls per second for Create*). The optimised integrations (``states:::sagemaker:*``) report
#: every unmodeled SageMaker error - throttling and internal errors included - as
#: ``SageMaker.AmazonSageMakerException`` (the AWS SDK for Java v1 exception); a validation error
#: under the same name is retried too, boundedly, because the name cannot tell them apart.
SAGEMAKER_TRANSIENT = ["SageMaker.AmazonSageMakerException"]

#: The AWS SDK integrations (``states:::aws-sdk:sagemaker:*``) name errors
#: ``<Service>.<Error>Exception``; unmodeled ones (ThrottlingException, InternalFailure,
#: ValidationException) arrive as ``SageMaker.SageMakerException``.
SAGEMAKER_SDK_TRANSIENT = ["SageMaker.SageMakerException"]

#: SNS Publish: 30,000 TPS default in large regions; a retry is cheap and a duplicate
#: notification is harmless.
SNS_TRANSIENT = [
    "SNS.InternalErrorException",
    "SNS.ThrottledException",
    "SNS.SdkClientException",
    "SNS.KmsThrottlingException",
]


def lambda_retry() -> dict[str, Any]:
    return dict(
        errors=LAMBDA_TRANSIENT,
        interval=cdk.Duration.seconds(2),
        max_attempts=6,
        backoff_rate=2,
        max_delay=cdk.Duration.seconds(60),
        jitter_strategy=sfn.JitterType.FULL,
    )


def sagemaker_retry(*, max_attempts: int = 3) -> dict[str, Any]:
    return dict(
        errors=SAGEMAKER_TRANSIENT,
        interval=cdk.Duration.seconds(5),
        max_attempts=max_attempts,
        backoff_rate=2,
        max_delay=cdk.Duration.seconds(120),
        jitter_strategy=sfn.JitterType.FULL,
    )


def sagemaker_sdk_retry() -> dict[str, Any]:
    return dict(
        errors=SAGEMAKER_SDK_TRANSIENT,
        interval=cdk.Duration.seconds(2),
        max_attempts=3,
        backoff_rate=2,
        max_delay=cdk.Duration.seconds(30),
        jitter_strategy=sfn.JitterType.FULL,
    )


def sns_retry() -> dict[str, Any]:
    return dict(
        errors=SNS_TRANSIENT,
        interval=cdk.Duration.seconds(1),
        max_attempts=3,
        backoff_rate=2,
        jitter_strategy=sfn.JitterType.FULL,
    )
