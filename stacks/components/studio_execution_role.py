"""The execution role of Studio users and spaces, scoped to this platform's resources."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.arns import sagemaker_arn
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.nag import acknowledge_wildcard_actions, acknowledge_wildcard_resources


class StudioExecutionRole(Construct):
    """What a data scientist can do from Studio: read and write datasets, read models and run
    artifacts, start and watch fine-tuning runs, review and approve registered models, use the
    MLflow App, and manage their own apps and spaces in the domain. No managed *FullAccess policy.

    Props:
        datasets_bucket / artifacts_bucket / encryption_key: the platform's data.
        state_machine_name: the fine-tuning workflow (created by a later stack, hence by name).
        model_package_group_name: the Model Registry group.
        mlflow_app_arn: the MLflow App, or None when MLflow is off.
        resource_prefix: prefix of training jobs, models and endpoints the workflow creates.

    Attributes:
        role: the IAM role.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        datasets_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        encryption_key: kms.IKey,
        state_machine_name: str,
        model_package_group_name: str,
        mlflow_app_arn: str | None,
        resource_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker Studio users and spaces of the LLM fine-tuning platform",
        )
        datasets_bucket.grant_read_write(self.role)
        artifacts_bucket.grant_read(self.role)
        encryption_key.grant_encrypt_decrypt(self.role)

        state_machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        executions_arn = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine_name}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="RunFineTuningWorkflow",
                actions=["states:StartExecution", "states:ListExecutions"],
                resources=[state_machine_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WatchFineTuningRuns",
                actions=[
                    "states:DescribeExecution",
                    "states:GetExecutionHistory",
                    "states:StopExecution",
                ],
                resources=[executions_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReviewAndApproveModels",
                actions=[
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:ListModelPackages",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:UpdateModelPackage",
                ],
                resources=[
                    sagemaker_arn(self, "model-package-group", model_package_group_name),
                    sagemaker_arn(self, "model-package", f"{model_package_group_name}/*"),
                ],
            )
        )
        run_resources = [
            sagemaker_arn(self, "training-job", f"{resource_prefix}-*"),
            sagemaker_arn(self, "model", f"{resource_prefix}-*"),
            sagemaker_arn(self, "endpoint", f"{resource_prefix}-*"),
            sagemaker_arn(self, "endpoint-config", f"{resource_prefix}-*"),
        ]
        tracking_resources = [
            sagemaker_arn(self, "experiment", "*"),
            sagemaker_arn(self, "experiment-trial", "*"),
            sagemaker_arn(self, "experiment-trial-component", "*"),
        ]
        training_logs = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TrainingJobs:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InspectRunResources",
                actions=[
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:DescribeModel",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DescribeExperiment",
                    "sagemaker:DescribeTrial",
                    "sagemaker:DescribeTrialComponent",
                    "sagemaker:ListTags",
                ],
                resources=[*run_resources, *tracking_resources],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeRunEndpoints",
                actions=["sagemaker:InvokeEndpoint"],
                resources=[sagemaker_arn(self, "endpoint", f"{resource_prefix}-*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListAndSearch",
                # List and Search APIs support no resource-level permissions.
                actions=[
                    "sagemaker:ListTrainingJobs",
                    "sagemaker:ListEndpoints",
                    "sagemaker:ListModelPackageGroups",
                    "sagemaker:ListExperiments",
                    "sagemaker:ListTrials",
                    "sagemaker:ListTrialComponents",
                    "sagemaker:Search",
                    "states:ListStateMachines",
                ],
                resources=["*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadTrainingLogs",
                actions=[
                    "logs:DescribeLogStreams",
                    "logs:GetLogEvents",
                    "logs:FilterLogEvents",
                ],
                resources=[training_logs],
            )
        )
        if mlflow_app_arn is not None:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="UseMlflowApp",
                    actions=[
                        "sagemaker-mlflow:*",
                        "sagemaker:DescribeMlflowApp",
                        "sagemaker:CreatePresignedMlflowAppUrl",
                    ],
                    resources=[mlflow_app_arn],
                )
            )
            acknowledge_wildcard_actions(
                self.role.policy,
                "MLflow's REST API maps one-to-one onto sagemaker-mlflow actions (runs, metrics, "
                "artifacts, registry: dozens, growing with MLflow releases); the statement is "
                "limited to this platform's single MLflow App ARN.",
                "sagemaker-mlflow:*",
            )
        policy = self.role.policy
        acknowledge_wildcard_resources(
            policy,
            "Datasets are uploaded and read by key under any prefix of the platform's datasets "
            "bucket; artifacts (models, checkpoints, run records) are read by key under the "
            "artifacts bucket. Both buckets exist only for this platform.",
            datasets_bucket.arn_for_objects("*"),
            artifacts_bucket.arn_for_objects("*"),
        )
        acknowledge_wildcard_actions(
            policy,
            "CDK's grant_read_write / grant_read / grant_encrypt_decrypt action groups, confined "
            "to the platform's two buckets and its KMS key.",
            "s3:GetObject*",
            "s3:GetBucket*",
            "s3:List*",
            "s3:DeleteObject*",
            "s3:Abort*",
            "kms:ReEncrypt*",
            "kms:GenerateDataKey*",
        )
        acknowledge_wildcard_resources(
            policy,
            "Training jobs, models, endpoints and endpoint configs are created per run by the "
            "workflow under the platform's name prefix; users inspect them read-only.",
            *run_resources,
        )
        acknowledge_wildcard_resources(
            policy,
            "SageMaker Experiments names experiments, trials and trial components per run "
            "(training jobs create their own components); users only describe them.",
            *tracking_resources,
        )
        acknowledge_wildcard_resources(
            policy,
            "Each training job writes its own log stream in the SageMaker training log group; "
            "users read those streams only.",
            training_logs,
        )
        acknowledge_wildcard_resources(
            policy,
            "Each run is an execution named by its run id under the platform's one state "
            "machine; users describe, stop and read the history of those executions.",
            executions_arn,
        )
        acknowledge_wildcard_resources(
            policy,
            "Model package versions are numbered by SageMaker inside the platform's one Model "
            "Package Group; users review and approve them.",
            sagemaker_arn(self, "model-package", f"{model_package_group_name}/*"),
        )
        acknowledge_wildcard_resources(
            policy,
            "SageMaker List and Search APIs (training jobs, endpoints, experiments, Search) "
            "support no resource-level permissions; they are read-only.",
            "*",
        )

    def allow_studio_apps(self, domain_id: str) -> None:
        """Let users manage their own apps and spaces in ``domain_id``."""
        domain_children = [
            sagemaker_arn(self, "user-profile", f"{domain_id}/*"),
            sagemaker_arn(self, "space", f"{domain_id}/*"),
            sagemaker_arn(self, "app", f"{domain_id}/*"),
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ManageOwnStudioApps",
                actions=[
                    "sagemaker:CreateApp",
                    "sagemaker:DeleteApp",
                    "sagemaker:DescribeApp",
                    "sagemaker:ListApps",
                    "sagemaker:CreateSpace",
                    "sagemaker:UpdateSpace",
                    "sagemaker:DeleteSpace",
                    "sagemaker:DescribeSpace",
                    "sagemaker:ListSpaces",
                    "sagemaker:DescribeUserProfile",
                    "sagemaker:DescribeDomain",
                    "sagemaker:AddTags",
                ],
                resources=[sagemaker_arn(self, "domain", domain_id), *domain_children],
            )
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "Studio creates user profiles, spaces and apps (JupyterLab, Code Editor) on demand "
            "with generated names; the grant is confined to this platform's domain.",
            *domain_children,
        )
