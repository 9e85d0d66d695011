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
#: calls per second for Create*); throttling and internal errors surface under these names.
SAGEMAKER_TRANSIENT = [
    "SageMaker.AmazonSageMakerException",
    "SageMaker.ThrottlingException",
    "SageMaker.InternalFailure",
    "SageMaker.ServiceUnavailable",
]

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


def sagemaker_retry(*, max_attempts: int = 5) -> dict[str, Any]:
    return dict(
        errors=SAGEMAKER_TRANSIENT,
        interval=cdk.Duration.seconds(5),
        max_attempts=max_attempts,
        backoff_rate=2,
        max_delay=cdk.Duration.seconds(120),
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
