"""ARNs of SageMaker resources named by convention, in the scope's account, region, partition."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct

__all__ = ["sagemaker_arn"]


def sagemaker_arn(scope: IConstruct, resource: str, name: str) -> str:
    """e.g. ``sagemaker_arn(self, "training-job", "llmft-dev-*")``."""
    return cdk.Stack.of(scope).format_arn(
        service="sagemaker", resource=resource, resource_name=name
    )
