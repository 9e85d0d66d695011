"""Execution roles that SageMaker assumes: one for training jobs, one for served models."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.components.huggingface_images import RegionalImage
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.nag import acknowledge_wildcard_actions, acknowledge_wildcard_resources

_SAGEMAKER = iam.ServicePrincipal("sagemaker.amazonaws.com")


def _vpc_access(role: ManagedPolicyRole, vpc: ec2.IVpc) -> None:
    """SageMaker creates the job's or endpoint's network interfaces in the VPC with this role.
    EC2 Describe calls support no resource scoping; creation is confined to the VPC."""
    stack = cdk.Stack.of(role)
    role.add_to_policy(
        iam.PolicyStatement(
            sid="DescribeNetwork",
            actions=[
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVpcs",
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
            ],
            resources=["*"],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="ManageNetworkInterfacesInPlatformVpc",
            actions=[
                "ec2:CreateNetworkInterface",
                "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterface",
                "ec2:DeleteNetworkInterfacePermission",
            ],
            resources=["*"],
            conditions={
                "ArnEquals": {
                    "ec2:Vpc": stack.format_arn(
                        service="ec2", resource="vpc", resource_name=vpc.vpc_id
                    )
                }
            },
        )
    )


def _logs_and_metrics(role: ManagedPolicyRole, log_group_name: str, namespace: str) -> str:
    stack = cdk.Stack.of(role)
    log_groups = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"{log_group_name}:*",
        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="WriteLogs",
            actions=[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ],
            resources=[log_groups],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="PublishMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": namespace}},
        )
    )
    return log_groups


def _pull_images(role: ManagedPolicyRole, repository_arns: list[str]) -> None:
    role.add_to_policy(
        iam.PolicyStatement(
            sid="PullImages",
            actions=[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            resources=repository_arns,
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="EcrLogin",  # GetAuthorizationToken is account-wide by design
            actions=["ecr:GetAuthorizationToken"],
            resources=["*"],
        )
    )


class TrainingJobRole(Construct):
    """The role training jobs run with: read datasets, write models and checkpoints (and read
    checkpoints back on restart), use the platform key, pull the training images, log, publish
    metrics, log to MLflow, and place network interfaces in the platform VPC.

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
        custom_image_repository: ecr.IRepository,
        script_mode_image: RegionalImage,
        script_source: s3_assets.Asset,
        vpc: ec2.IVpc,
        mlflow_app_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=_SAGEMAKER,
            description="SageMaker training jobs of the LLM fine-tuning workflow",
        )
        datasets_bucket.grant_read(role)
        model_objects = artifacts_bucket.arn_for_objects("models/*")
        checkpoint_objects = artifacts_bucket.arn_for_objects("checkpoints/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteModelsAndCheckpoints",
                actions=["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                resources=[model_objects, checkpoint_objects],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListCheckpoints",
                actions=["s3:ListBucket"],
                resources=[artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["checkpoints/*", "models/*"]}},
            )
        )
        encryption_key.grant_encrypt_decrypt(role)
        # Asset.grant_read would open the whole CDK assets bucket; the bundle object is enough.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadScriptModeSource",
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:s3:::{script_source.s3_bucket_name}/"
                    f"{script_source.s3_object_key}"
                ],
            )
        )
        _pull_images(
            role, [custom_image_repository.repository_arn, script_mode_image.repository_arn(self)]
        )
        log_groups = _logs_and_metrics(
            role, "/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TrainingJobs"
        )
        _vpc_access(role, vpc)
        if mlflow_app_arn is not None:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="LogToMlflow", actions=["sagemaker-mlflow:*"], resources=[mlflow_app_arn]
                )
            )
            acknowledge_wildcard_actions(
                role.policy,
                "The training code logs params, metrics and the model through MLflow's REST "
                "API, which maps onto dozens of sagemaker-mlflow actions; limited to the one "
                "MLflow App.",
                "sagemaker-mlflow:*",
            )
        acknowledge_wildcard_resources(
            role.policy,
            "Channels are any objects of the platform's datasets bucket; each job writes its "
            "model under models/<run>/ and checkpoints under checkpoints/<run>/; each job's logs "
            "go to its own stream in the SageMaker training log group.",
            datasets_bucket.arn_for_objects("*"),
            model_objects,
            checkpoint_objects,
            log_groups,
        )
        _acknowledge_service_wildcards(role, grants=("s3:GetObject*", "s3:GetBucket*", "s3:List*"))


class ModelRole(Construct):
    """The role served models run with: read the model artifacts, write endpoint data capture,
    use the platform key, pull the serving image, log and place interfaces in the platform VPC.

    Attributes:
        role: the IAM role.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        artifacts_bucket: s3.IBucket,
        encryption_key: kms.IKey,
        serving_image: RegionalImage,
        vpc: ec2.IVpc,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=_SAGEMAKER,
            description="Models and endpoints deployed by the LLM fine-tuning workflow",
        )
        model_objects = artifacts_bucket.arn_for_objects("models/*")
        capture_objects = artifacts_bucket.arn_for_objects("data-capture/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModels", actions=["s3:GetObject"], resources=[model_objects]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListModels",
                actions=["s3:ListBucket"],
                resources=[artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["models/*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteDataCapture", actions=["s3:PutObject"], resources=[capture_objects]
            )
        )
        encryption_key.grant_encrypt_decrypt(role)
        _pull_images(role, [serving_image.repository_arn(self)])
        log_groups = _logs_and_metrics(role, "/aws/sagemaker/Endpoints", "/aws/sagemaker/Endpoints")
        _vpc_access(role, vpc)
        acknowledge_wildcard_resources(
            role.policy,
            "Models are read from models/<run>/ and request/response samples captured under "
            "data-capture/<endpoint>/; each endpoint logs to its own stream in the SageMaker "
            "endpoint log group.",
            model_objects,
            capture_objects,
            log_groups,
        )
        _acknowledge_service_wildcards(role, grants=())


def _acknowledge_service_wildcards(role: ManagedPolicyRole, *, grants: tuple[str, ...]) -> None:
    acknowledge_wildcard_resources(
        role.policy,
        "EC2 Describe*, ECR GetAuthorizationToken and CloudWatch PutMetricData support no "
        "resource scoping; interface creation is confined to the platform VPC and metrics to "
        "the SageMaker namespace by conditions.",
        "*",
    )
    acknowledge_wildcard_actions(
        role.policy,
        "CDK grant action groups on the platform's buckets and key (read channels, encrypt and "
        "decrypt with the platform key).",
        *grants,
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
    )
