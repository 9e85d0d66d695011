"""Stateful: the SageMaker Studio domain, its users and their execution role."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.components.studio_approval_deploys import ApprovalDeploys
from stacks.components.studio_domain import StudioDomain
from stacks.components.studio_execution_role import StudioExecutionRole
from stacks.components.studio_lifecycle import StudioSetup
from stacks.shared import SharedResources


class StudioStack(cdk.Stack):
    """A VPC-only Studio domain with one profile per configured user."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        shared: SharedResources,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        config, network, encryption_key = shared.config, shared.network, shared.encryption_key
        datasets_bucket, artifacts_bucket = shared.buckets(self)
        self.execution_role = StudioExecutionRole(
            self,
            "ExecutionRole",
            datasets_bucket=datasets_bucket,
            artifacts_bucket=artifacts_bucket,
            encryption_key=encryption_key,
            arns=shared.arns(self),
            mlflow_app_arn=shared.mlflow_app_arn,
            stack_names=(config.stack_name("data"), config.stack_name("workflow")),
            launch_function_name=config.launch_function_name,
        )
        # From the first login: the finetune CLI and the walkthrough notebook in JupyterLab.
        self.setup = StudioSetup(
            self,
            "Setup",
            name=f"{config.prefix}-jupyterlab-setup",
            platform_env=config.env_name,
            prefix=config.prefix,
            studio_role=self.execution_role.role,
        )
        self.studio = StudioDomain(
            self,
            "Studio",
            domain_name=f"{config.prefix}-studio",
            vpc=network.vpc,
            subnets=network.private_subnets,
            security_group=network.workload_security_group,
            encryption_key=encryption_key,
            execution_role=self.execution_role.role,
            user_names=config.studio_users,
            default_instance_type=config.studio_default_instance_type,
            idle_timeout_minutes=config.studio_idle_timeout_minutes,
            lifecycle_config_arn=self.setup.arn,
        )
        self.execution_role.allow_studio_apps(self.studio.domain_id)
        # Approving a package in Studio's Model Registry deploys it (when its run asked).
        self.approval_deploys = ApprovalDeploys(
            self,
            "ApprovalDeploys",
            rule_name=f"{config.prefix}-deploy-approved-models",
            package_group_name=shared.model_package_group_name,
            state_machine_arn=shared.arns(self).state_machine,
        )
        cdk.CfnOutput(self, "StudioDomainId", value=self.studio.domain_id)
        cdk.CfnOutput(self, "StudioExecutionRoleArn", value=self.execution_role.role.role_arn)
