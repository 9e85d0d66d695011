"""Stateful: the SageMaker Studio domain, its users and their execution role."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.private_network import PrivateNetwork
from stacks.components.studio_domain import StudioDomain
from stacks.components.studio_execution_role import StudioExecutionRole
from stacks.config import PlatformConfig
from stacks.data_stack import import_bucket


class StudioStack(cdk.Stack):
    """A VPC-only Studio domain with one profile per configured user."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PlatformConfig,
        network: PrivateNetwork,
        encryption_key: kms.IKey,
        datasets_bucket_name: str,
        artifacts_bucket_name: str,
        model_package_group_name: str,
        mlflow_app_arn: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        datasets_bucket = import_bucket(
            self, "DatasetsBucket", bucket_name=datasets_bucket_name, encryption_key=encryption_key
        )
        artifacts_bucket = import_bucket(
            self,
            "ArtifactsBucket",
            bucket_name=artifacts_bucket_name,
            encryption_key=encryption_key,
        )
        self.execution_role = StudioExecutionRole(
            self,
            "ExecutionRole",
            datasets_bucket=datasets_bucket,
            artifacts_bucket=artifacts_bucket,
            encryption_key=encryption_key,
            state_machine_name=config.state_machine_name,
            model_package_group_name=model_package_group_name,
            mlflow_app_arn=mlflow_app_arn,
            resource_prefix=config.resource_name_prefix,
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
        )
        self.execution_role.allow_studio_apps(self.studio.domain_id)
        cdk.CfnOutput(self, "StudioDomainId", value=self.studio.domain_id)
        cdk.CfnOutput(self, "StudioExecutionRoleArn", value=self.execution_role.role.role_arn)
