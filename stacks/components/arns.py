"""ARNs of what the platform names by convention, in the scope's partition, region and account.

One place builds them, so that every grant, acknowledgement and test names the same resources:
SageMaker jobs, models, endpoint configs and endpoints are ``<prefix>-...``, packages are
numbered versions of the platform's one group, executions belong to its one state machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from constructs import IConstruct

__all__ = ["PlatformArns", "log_group_arn", "sagemaker_arn"]


def sagemaker_arn(scope: IConstruct, resource: str, name: str) -> str:
    """e.g. ``sagemaker_arn(self, "training-job", "llmft-dev-*")``."""
    return cdk.Stack.of(scope).format_arn(
        service="sagemaker", resource=resource, resource_name=name
    )


def log_group_arn(scope: IConstruct, name: str) -> str:
    """A log group and its streams (``log-group:<name>:*``), as CloudWatch Logs authorizes."""
    return cdk.Stack.of(scope).format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"{name}:*",
        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
    )


@dataclass(frozen=True)
class PlatformArns:
    """The platform's named resources. Built from names only, so any stack can have them."""

    training_jobs: str
    models: str
    endpoint_configs: str
    endpoints: str
    package_group: str
    packages: str
    experiments: str
    trials: str
    trial_components: str
    state_machine: str
    executions: str
    endpoint_log_groups: str
    training_log_group: str

    @classmethod
    def of(
        cls,
        scope: IConstruct,
        *,
        prefix: str,
        model_package_group: str,
        state_machine_name: str,
    ) -> PlatformArns:
        stack = cdk.Stack.of(scope)
        state_machine = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        return cls(
            training_jobs=sagemaker_arn(scope, "training-job", f"{prefix}-*"),
            models=sagemaker_arn(scope, "model", f"{prefix}-*"),
            endpoint_configs=sagemaker_arn(scope, "endpoint-config", f"{prefix}-*"),
            endpoints=sagemaker_arn(scope, "endpoint", f"{prefix}-*"),
            package_group=sagemaker_arn(scope, "model-package-group", model_package_group),
            packages=sagemaker_arn(scope, "model-package", f"{model_package_group}/*"),
            experiments=sagemaker_arn(scope, "experiment", f"{prefix}-*"),
            trials=sagemaker_arn(scope, "experiment-trial", f"{prefix}-*"),
            trial_components=sagemaker_arn(scope, "experiment-trial-component", f"{prefix}-*"),
            state_machine=state_machine,
            executions=stack.format_arn(
                service="states",
                resource="execution",
                resource_name=f"{state_machine_name}:*",
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            ),
            # SageMaker writes each endpoint's logs to a group of its own.
            endpoint_log_groups=log_group_arn(scope, f"/aws/sagemaker/Endpoints/{prefix}-*"),
            training_log_group=log_group_arn(scope, "/aws/sagemaker/TrainingJobs"),
        )
