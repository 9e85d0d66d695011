"""Stateless: the training image, the workflow's functions, roles, topic and state machine.

Everything here can be destroyed and redeployed freely; data, keys, network, Studio and the
registry live in the stateful stacks. This stack only composes: each construct owns its grants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from runspec.settings import PlatformSettings
from stacks.components.functions.launch import LaunchFunction
from stacks.components.functions.placement import FunctionPlacement
from stacks.components.functions.record import RecordFunction
from stacks.components.functions.smoke_test import SmokeTestFunction
from stacks.components.huggingface_images import huggingface_tgi_image
from stacks.components.run_notifications import RunNotifications
from stacks.components.sagemaker_roles import ModelRole, TrainingJobRole
from stacks.components.training_image import TrainingImage
from stacks.components.workflow.definition import WorkflowResources
from stacks.components.workflow.finetune_workflow import FineTuneWorkflow
from stacks.data_stack import DATA_CAPTURE_PREFIX
from stacks.shared import SharedResources

REPO = Path(__file__).resolve().parents[1]


class WorkflowStack(cdk.Stack):
    """The fine-tuning workflow: Launch -> Train (.sync) -> Record -> Gate -> Register ->
    Deploy (smoke test, rollback) -> Record -> Notify."""

    def __init__(
        self, scope: Construct, construct_id: str, *, shared: SharedResources, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        config, key, network = shared.config, shared.encryption_key, shared.network
        datasets, artifacts = shared.buckets(self)
        arns = shared.arns(self)
        image = TrainingImage(self, "TrainingImage", source_dir=REPO / "training_code")
        training_role = TrainingJobRole(
            self,
            "TrainingJobRole",
            datasets_bucket=datasets,
            artifacts_bucket=artifacts,
            encryption_key=key,
            custom_image_repository=image.image.repository,
            script_mode_image=image.script_mode_image,
            script_source=image.script_source,
            vpc=network.vpc,
            mlflow_app_arn=shared.mlflow_app_arn,
            arns=arns,
            judge_model_ids=config.judge_model_ids,
        ).role
        serving_image = huggingface_tgi_image()
        model_role = ModelRole(
            self,
            "ModelRole",
            artifacts_bucket=artifacts,
            encryption_key=key,
            serving_image=serving_image,
            vpc=network.vpc,
            arns=arns,
        ).role
        topic = RunNotifications(
            self,
            "Notifications",
            topic_name=f"{config.prefix}-runs",
            encryption_key=key,
            emails=config.notification_emails,
        ).topic
        settings = PlatformSettings(
            prefix=config.prefix,
            region=self.region,
            datasets_bucket=datasets.bucket_name,
            artifacts_bucket=artifacts.bucket_name,
            state_machine_arn=arns.state_machine,
            custom_image_uri=image.image_uri,
            script_mode_image_uri=image.script_mode_image_uri,
            script_source_s3_uri=image.script_source_s3_uri,
            default_training_instance_type=config.training_instance_type,
            allowed_training_instance_types=config.allowed_training_instance_types,
            max_training_instances=config.max_training_instances,
            training_capacity_retries=config.training_capacity_retries,
            training_capacity_backoff_seconds=config.training_capacity_backoff_minutes * 60,
            judge_model_ids=config.judge_model_ids,
            default_endpoint_instance_type=config.endpoint_instance_type,
            model_package_group=shared.model_package_group_name,
            model_approval_status=config.model_approval_status,
            internet_egress=config.internet_egress,
            kms_key_arn=key.key_arn,
            allow_trust_remote_code=config.allow_trust_remote_code,
            mlflow_tracking_arn=shared.mlflow_app_arn or "",
        )
        placement = FunctionPlacement(
            code_dir=REPO / "lambdas",
            network=network,
            encryption_key=key,
            log_retention_days=config.log_retention_days,
        )
        launch = LaunchFunction(
            self,
            "LaunchRun",
            placement=placement,
            function_name=config.launch_function_name,
            settings=settings,
            datasets_bucket=datasets,
            artifacts_bucket=artifacts,
            image_repository=image.image.repository,
            arns=arns,
        )
        record = RecordFunction(
            self,
            "RecordRun",
            placement=placement,
            artifacts_bucket=artifacts,
            arns=arns,
            mlflow_app_arn=shared.mlflow_app_arn,
        )
        smoke = SmokeTestFunction(
            self, "SmokeTest", placement=placement, artifacts_bucket=artifacts, arns=arns
        )
        workflow = FineTuneWorkflow(
            self,
            "Workflow",
            state_machine_name=config.state_machine_name,
            arns=arns,
            resources=WorkflowResources(
                launch_function=launch.function,
                record_function=record.function,
                smoke_test_function=smoke.function,
                topic=topic,
                training_role_arn=training_role.role_arn,
                model_role_arn=model_role.role_arn,
                key_arn=key.key_arn,
                subnet_ids=network.private_subnets.subnet_ids,
                security_group_id=network.workload_security_group.security_group_id,
                metric_definitions=image.metric_definitions,
                serving_image_uri=serving_image.uri(self),
                data_capture_s3_uri=f"s3://{artifacts.bucket_name}/{DATA_CAPTURE_PREFIX}",
                mlflow_tracking_arn=shared.mlflow_app_arn,
            ),
            encryption_key=key,
            log_retention_days=config.log_retention_days,
        )
        self.state_machine = workflow.state_machine
        self.launch_function = launch.function
        cdk.CfnOutput(self, "StateMachineArn", value=workflow.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "LaunchFunctionName", value=launch.function.function_name)
        cdk.CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)
        cdk.CfnOutput(self, "TrainingImageUri", value=image.image_uri)
        cdk.CfnOutput(self, "TrainingRoleArn", value=training_role.role_arn)
