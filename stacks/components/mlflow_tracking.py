"""SageMaker AI MLflow: the experiments hub of SageMaker Studio."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.components.key_use import READ_WRITE, use_key_via
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.nag import acknowledge_wildcard_resources

#: Artifacts (run files, logged models) live under this prefix of the artifacts bucket.
MLFLOW_ARTIFACT_PREFIX = "mlflow"


class MlflowTracking(Construct):
    """A serverless SageMaker AI MLflow App (``AWS::SageMaker::MlflowApp``).

    An MLflow App rather than an MLflow tracking server: it needs no size, no start/stop and no
    hourly instance, scales with use, and is what current Studio opens as its experiments hub.
    Models logged to it are registered in the SageMaker Model Registry automatically.

    Props:
        app_name: the app's name.
        artifacts_bucket: the bucket its artifact store lives in (under ``mlflow/``).

    Attributes:
        app: the L1 MLflow App.
        app_arn: its ARN, the tracking URI MLflow clients use (with the sagemaker-mlflow plugin).
        role: the role the app uses for its artifact store and model registration.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, app_name: str, artifacts_bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker AI MLflow App: artifact store and automatic model registration",
        )
        artifacts = artifacts_bucket.arn_for_objects(f"{MLFLOW_ARTIFACT_PREFIX}/*")
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ArtifactStore",
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resources=[artifacts],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListArtifactStore",
                actions=["s3:ListBucket", "s3:GetBucketLocation"],
                resources=[artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{MLFLOW_ARTIFACT_PREFIX}/*"]}},
            )
        )
        if artifacts_bucket.encryption_key is not None:
            use_key_via(
                self.role,
                artifacts_bucket.encryption_key,
                services=["s3"],
                actions=READ_WRITE,
                sid="UseKeyViaS3",
            )
        registry_resources = [
            stack.format_arn(service="sagemaker", resource="model-package-group/*"),
            stack.format_arn(service="sagemaker", resource="model-package/*"),
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AutomaticModelRegistration",
                actions=[
                    "sagemaker:AddTags",
                    "sagemaker:CreateModelPackageGroup",
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:UpdateModelPackage",
                ],
                resources=registry_resources,
            )
        )
        self.app = sagemaker.CfnMlflowApp(
            self,
            "App",
            name=app_name,
            artifact_store_uri=f"s3://{artifacts_bucket.bucket_name}/{MLFLOW_ARTIFACT_PREFIX}",
            role_arn=self.role.role_arn,
            model_registration_mode="AutoModelRegistrationEnabled",
        )
        # The role gets its permissions from a separate managed policy; SageMaker validates the
        # role when the app is created, so the policy must exist first.
        self.app.node.add_dependency(self.role.policy)
        self.app.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.app_arn = self.app.attr_arn
        acknowledge_wildcard_resources(
            self.role.policy,
            "MLflow automatic registration creates one Model Package Group per MLflow registered "
            "model, named by the user when logging, so names cannot be known in advance; the "
            "actions are limited to registration.",
            *registry_resources,
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "MLflow writes one object per run artifact under its own mlflow/ prefix of the "
            "artifacts bucket; the grant is confined to that prefix.",
            artifacts,
        )
