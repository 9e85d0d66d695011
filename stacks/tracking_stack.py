"""Stateful: experiment tracking (SageMaker AI MLflow) and the Model Registry group."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.mlflow_tracking import MlflowTracking
from stacks.components.model_registry import ModelRegistry
from stacks.config import PlatformConfig
from stacks.data_stack import import_bucket


class TrackingStack(cdk.Stack):
    """The MLflow App (when enabled) and the Model Package Group fine-tuned models go to.

    Attributes:
        mlflow_app_arn: the tracking ARN, or None when MLflow is off.
        model_package_group_name: the Model Registry group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PlatformConfig,
        artifacts_bucket_name: str,
        encryption_key: kms.IKey,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        artifacts_bucket = import_bucket(
            self,
            "ArtifactsBucket",
            bucket_name=artifacts_bucket_name,
            encryption_key=encryption_key,
        )
        self.registry = ModelRegistry(
            self, "ModelRegistry", group_name=config.model_package_group_name
        )
        self.model_package_group_name = self.registry.group_name
        self.mlflow_app_arn: str | None = None
        if config.mlflow_enabled:
            self.mlflow = MlflowTracking(
                self,
                "Mlflow",
                app_name=config.mlflow_app_name,
                artifacts_bucket=artifacts_bucket,
            )
            self.mlflow_app_arn = self.mlflow.app_arn
            cdk.CfnOutput(self, "MlflowTrackingArn", value=self.mlflow.app_arn)
        cdk.CfnOutput(self, "ModelPackageGroupName", value=self.model_package_group_name)
