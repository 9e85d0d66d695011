"""Stateless: the training image, the workflow's functions, roles, topic and state machine.

Everything here can be destroyed and redeployed freely; data, keys, network, Studio and the
registry live in the stateful stacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from runspec.settings import PlatformSettings
from stacks.components.arns import sagemaker_arn
from stacks.components.huggingface_images import huggingface_tgi_image
from stacks.components.private_network import PrivateNetwork
from stacks.components.project_function import ProjectFunction
from stacks.components.run_notifications import RunNotifications
from stacks.components.sagemaker_roles import ModelRole, TrainingJobRole
from stacks.components.training_image import TrainingImage
from stacks.components.workflow.definition import WorkflowResources
from stacks.components.workflow.finetune_workflow import FineTuneWorkflow
from stacks.config import PlatformConfig
from stacks.data_stack import import_bucket
from stacks.nag import acknowledge_wildcard_actions, acknowledge_wildcard_resources

REPO = Path(__file__).resolve().parents[1]


class WorkflowStack(cdk.Stack):
    """The fine-tuning workflow: Launch -> Train (.sync) -> Record -> Gate -> Register ->
    Deploy (smoke test, rollback) -> Record -> Notify."""

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
        datasets = import_bucket(
            self, "DatasetsBucket", bucket_name=datasets_bucket_name, encryption_key=encryption_key
        )
        artifacts = import_bucket(
            self,
            "ArtifactsBucket",
            bucket_name=artifacts_bucket_name,
            encryption_key=encryption_key,
        )
        image = TrainingImage(self, "TrainingImage", source_dir=REPO / "training_code")
        training_role = TrainingJobRole(
            self,
            "TrainingJobRole",
            datasets_bucket=datasets,
            artifacts_bucket=artifacts,
            encryption_key=encryption_key,
            custom_image_repository=image.image.repository,
            script_mode_image=image.script_mode_image,
            script_source=image.script_source,
            vpc=network.vpc,
            mlflow_app_arn=mlflow_app_arn,
        ).role
        serving_image = huggingface_tgi_image()
        model_role = ModelRole(
            self,
            "ModelRole",
            artifacts_bucket=artifacts,
            encryption_key=encryption_key,
            serving_image=serving_image,
            vpc=network.vpc,
        ).role
        topic = RunNotifications(
            self,
            "Notifications",
            topic_name=f"{config.prefix}-runs",
            encryption_key=encryption_key,
            emails=config.notification_emails,
        ).topic

        state_machine_arn = self.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=config.state_machine_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        settings = PlatformSettings(
            prefix=config.prefix,
            region=self.region,
            datasets_bucket=datasets.bucket_name,
            artifacts_bucket=artifacts.bucket_name,
            state_machine_arn=state_machine_arn,
            custom_image_uri=image.image_uri,
            script_mode_image_uri=image.script_mode_image_uri,
            script_source_s3_uri=image.script_source_s3_uri,
            default_training_instance_type=config.training_instance_type,
            allowed_training_instance_types=config.allowed_training_instance_types,
            default_endpoint_instance_type=config.endpoint_instance_type,
            model_package_group=model_package_group_name,
            model_approval_status=config.model_approval_status,
            internet_egress=config.internet_egress,
            kms_key_arn=encryption_key.key_arn,
            mlflow_tracking_arn=mlflow_app_arn or "",
        )
        functions = self._functions(config, network, encryption_key, settings)
        launch, record, smoke = functions
        self._grant_launch(
            launch, datasets, artifacts, image, state_machine_arn, model_package_group_name
        )
        self._grant_record(record, artifacts, config, model_package_group_name)
        smoke.role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeRunEndpoints",
                actions=["sagemaker:InvokeEndpoint"],
                resources=[sagemaker_arn(self, "endpoint", f"{config.prefix}-*")],
            )
        )
        references = artifacts.arn_for_objects("models/*/serving_reference.json")
        smoke.role.add_to_policy(
            iam.PolicyStatement(
                # The smoke test scores the example training scored, next to the model.
                sid="ReadServingReference",
                actions=["s3:GetObject"],
                resources=[references],
            )
        )
        smoke.role.add_to_policy(
            iam.PolicyStatement(
                sid="DecryptServingReference",
                actions=["kms:Decrypt"],
                resources=[encryption_key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
            )
        )
        acknowledge_wildcard_resources(
            smoke.role.policy,
            "Runs deploy to endpoints named <prefix>-<name>; the smoke test may call only those, "
            "and reads only the serving reference each training job writes beside its model "
            "(models/<run>/<job>/output/model/serving_reference.json).",
            sagemaker_arn(self, "endpoint", f"{config.prefix}-*"),
            references,
        )

        workflow = FineTuneWorkflow(
            self,
            "Workflow",
            state_machine_name=config.state_machine_name,
            resource_prefix=config.prefix,
            resources=WorkflowResources(
                launch_function=launch.function,
                record_function=record.function,
                smoke_test_function=smoke.function,
                topic=topic,
                training_role_arn=training_role.role_arn,
                model_role_arn=model_role.role_arn,
                key_arn=encryption_key.key_arn,
                subnet_ids=network.private_subnets.subnet_ids,
                security_group_id=network.workload_security_group.security_group_id,
                metric_definitions=image.metric_definitions,
                serving_image_uri=serving_image.uri(self),
                data_capture_s3_uri=f"s3://{artifacts.bucket_name}/data-capture",
                mlflow_tracking_arn=mlflow_app_arn,
            ),
            model_package_group_name=model_package_group_name,
            encryption_key=encryption_key,
            log_retention_days=config.log_retention_days,
        )
        self.state_machine = workflow.state_machine
        self.launch_function = launch.function
        cdk.CfnOutput(self, "StateMachineArn", value=workflow.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "LaunchFunctionName", value=launch.function.function_name)
        cdk.CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)
        cdk.CfnOutput(self, "TrainingImageUri", value=image.image_uri)
        cdk.CfnOutput(self, "TrainingRoleArn", value=training_role.role_arn)

    def _functions(
        self,
        config: PlatformConfig,
        network: PrivateNetwork,
        encryption_key: kms.IKey,
        settings: PlatformSettings,
    ) -> tuple[ProjectFunction, ProjectFunction, ProjectFunction]:
        common: dict[str, Any] = {
            "code_dir": REPO / "lambdas",
            "vpc": network.vpc,
            "subnets": ec2.SubnetSelection(subnets=network.private_subnets.subnets),
            "security_group": network.workload_security_group,
            "encryption_key": encryption_key,
            "log_retention_days": config.log_retention_days,
        }
        launch = ProjectFunction(
            self,
            "LaunchRun",
            handler="launch_run.handler.handler",
            description="Validates and resolves fine-tuning run requests; starts runs",
            environment=settings.to_env(),
            # Pinning a prefix channel lists up to 1,000 object versions.
            timeout_seconds=120,
            **common,
        )
        record = ProjectFunction(
            self,
            "RecordRun",
            handler="record_run.handler.handler",
            description="Records run milestones in SageMaker Experiments and the run record",
            environment={"FT_ARTIFACTS_BUCKET": settings.artifacts_bucket},
            **common,
        )
        smoke = ProjectFunction(
            self,
            "SmokeTest",
            handler="smoke_test.handler.handler",
            description="Sends one generation request to a freshly deployed endpoint",
            environment={},
            # A cold TGI endpoint can take tens of seconds for its first generation.
            timeout_seconds=120,
            **common,
        )
        return launch, record, smoke

    def _grant_launch(
        self,
        launch: ProjectFunction,
        datasets: Any,
        artifacts: Any,
        image: TrainingImage,
        state_machine_arn: str,
        group: str,
    ) -> None:
        role = launch.role
        runs = artifacts.arn_for_objects("runs/*")
        packages = sagemaker_arn(self, "model-package", f"{group}/*")
        role.add_to_policy(
            iam.PolicyStatement(
                # Deploying an earlier run reads its record and checks its package's approval.
                sid="ReadRunToDeploy",
                actions=["s3:GetObject"],
                resources=[runs],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="CheckPackageApproval",
                actions=["sagemaker:DescribeModelPackage"],
                resources=[packages],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DecryptRunRecords",
                actions=["kms:Decrypt"],
                resources=[artifacts.encryption_key.key_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PinDatasetVersions",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[datasets.arn_for_objects("*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListDatasetVersions",
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
                resources=[datasets.bucket_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PinTrainingImageDigest",
                actions=["ecr:DescribeImages"],
                resources=[image.image.repository.repository_arn],
            )
        )
        executions = state_machine_arn.replace(":stateMachine:", ":execution:") + ":*"
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StartRuns", actions=["states:StartExecution"], resources=[state_machine_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FindExistingRun", actions=["states:DescribeExecution"], resources=[executions]
            )
        )
        acknowledge_wildcard_resources(
            role.policy,
            "Requests name dataset objects anywhere in the platform's datasets bucket; the "
            "function only reads their metadata (HEAD) to pin versions. Existing runs are "
            "executions named by run id under the platform's one state machine; run records "
            "live under runs/<run id>/ and packages are numbered versions in the platform's "
            "group.",
            datasets.arn_for_objects("*"),
            executions,
            runs,
            packages,
        )

    def _grant_record(
        self,
        record: ProjectFunction,
        artifacts: Any,
        config: PlatformConfig,
        group: str,
    ) -> None:
        role = record.role
        runs = artifacts.arn_for_objects("runs/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteRunRecords", actions=["s3:GetObject", "s3:PutObject"], resources=[runs]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRunRecordsPrefix",
                actions=["s3:ListBucket"],
                resources=[artifacts.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["runs/*"]}},
            )
        )
        artifacts.encryption_key.grant_encrypt_decrypt(role)
        prefix = config.prefix
        experiments = [
            sagemaker_arn(self, "experiment", f"{prefix}-*"),
            sagemaker_arn(self, "experiment-trial", f"{prefix}-*"),
            sagemaker_arn(self, "experiment-trial-component", f"{prefix}-*"),
        ]
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RecordInExperiments",
                actions=[
                    "sagemaker:CreateExperiment",
                    "sagemaker:CreateTrial",
                    "sagemaker:CreateTrialComponent",
                    "sagemaker:UpdateTrialComponent",
                    "sagemaker:AssociateTrialComponent",
                    "sagemaker:DescribeTrialComponent",
                    "sagemaker:AddTags",
                ],
                resources=experiments,
            )
        )
        training_jobs = sagemaker_arn(self, "training-job", f"{prefix}-*")
        packages = sagemaker_arn(self, "model-package", f"{group}/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRunResults",
                actions=["sagemaker:DescribeTrainingJob", "sagemaker:DescribeModelPackage"],
                resources=[training_jobs, packages],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                # ListModelPackages supports no resource-level permissions.
                sid="FindBestApprovedModel",
                actions=["sagemaker:ListModelPackages"],
                resources=["*"],
            )
        )
        acknowledge_wildcard_resources(
            record.role.policy,
            "Run records live under runs/<run id>/; experiments, trials and trial components "
            "are named <prefix>-...; training jobs <prefix>-<run id>; packages are numbered "
            "versions in the platform's group.",
            runs,
            *experiments,
            training_jobs,
            packages,
        )
        acknowledge_wildcard_actions(
            record.role.policy,
            "CDK's grant_encrypt_decrypt action group on the platform key, for SSE-KMS run "
            "records.",
            "kms:ReEncrypt*",
            "kms:GenerateDataKey*",
        )
