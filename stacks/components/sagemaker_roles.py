"""Execution roles that SageMaker assumes: one for training jobs, one for served models."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from launch_run.base_models import jumpstart_buckets
from llm_sft.tracking import MLFLOW_CALLS
from stacks.components.arns import PlatformArns
from stacks.components.huggingface_images import RegionalImage
from stacks.components.key_use import READ_WRITE, use_key_via
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.components.mlflow_tracking import MLFLOW_ARTIFACT_PREFIX
from stacks.data_stack import CHECKPOINTS_PREFIX, DATA_CAPTURE_PREFIX, MODELS_PREFIX
from stacks.nag import acknowledge_wildcard_resources

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


def _logs_and_metrics(role: ManagedPolicyRole, log_groups: str, namespace: str) -> str:
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


def judge_model_statement(stack: cdk.Stack, model_ids: Sequence[str]) -> iam.PolicyStatement:
    """Invoke the platform's judge models (llm_sft.judge calls bedrock-runtime Converse).

    Converse and InvokeModel are authorized as ``bedrock:InvokeModel`` (Bedrock API reference,
    Converse: "This operation requires permission for the bedrock:InvokeModel action") on the
    model the request names; a foundation model id names
    ``arn:${Partition}:bedrock:${Region}::foundation-model/${ResourceId}`` (Service
    Authorization Reference, Amazon Bedrock: the foundation-model resource type). Only
    foundation models in the stack's region: a cross-Region inference profile would also need
    its account-scoped ``inference-profile/<id>`` ARN and the model in every destination
    Region, which the configuration refuses (stacks.config, judge_model_ids)."""
    return iam.PolicyStatement(
        sid="InvokeJudgeModels",
        actions=["bedrock:InvokeModel"],
        resources=[
            stack.format_arn(
                service="bedrock",
                account="",
                resource="foundation-model",
                resource_name=model_id,
            )
            for model_id in model_ids
        ],
    )


def mlflow_app_statements(mlflow_app_arn: str, artifacts: s3.IBucket) -> list[iam.PolicyStatement]:
    """Log runs to the platform's MLflow App: the App's data-plane action, the MLflow calls the
    tracker makes, and its artifact store, which the sagemaker-mlflow plugin writes with the
    caller's own credentials (presigned uploads are opt-in)."""
    return [
        iam.PolicyStatement(
            sid="LogToMlflowApp",
            actions=[
                # MLflow Apps authorize every REST call with this one action (SageMaker AI
                # "MLflow App IAM permissions"); the sagemaker-mlflow actions are those of
                # tracking servers, granted too for the calls the tracker makes.
                "sagemaker:CallMlflowAppApi",
                *(f"sagemaker-mlflow:{call}" for call in MLFLOW_CALLS),
            ],
            resources=[mlflow_app_arn],
        ),
        iam.PolicyStatement(
            sid="WriteMlflowArtifacts",
            actions=["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
            resources=[artifacts.arn_for_objects(f"{MLFLOW_ARTIFACT_PREFIX}/*")],
        ),
        iam.PolicyStatement(
            sid="ListMlflowArtifacts",
            actions=["s3:ListBucket"],
            resources=[artifacts.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{MLFLOW_ARTIFACT_PREFIX}/*"]}},
        ),
    ]


class TrainingJobRole(Construct):
    """The role training jobs run with: read datasets, write models and checkpoints (and read
    checkpoints back on restart), use the platform key, pull the training images, log, publish
    metrics, log to MLflow, place network interfaces in the platform VPC, and invoke the
    configured judge models (``judge_model_ids``, default none).

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
        arns: PlatformArns,
        judge_model_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=_SAGEMAKER,
            description="SageMaker training jobs of the LLM fine-tuning workflow",
        )
        datasets_objects = datasets_bucket.arn_for_objects("*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadChannels", actions=["s3:GetObject"], resources=[datasets_objects]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListChannels",
                actions=["s3:ListBucket"],
                resources=[datasets_bucket.bucket_arn],
            )
        )
        model_objects = artifacts_bucket.arn_for_objects(f"{MODELS_PREFIX}/*")
        checkpoint_objects = artifacts_bucket.arn_for_objects(f"{CHECKPOINTS_PREFIX}/*")
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
                conditions={
                    "StringLike": {"s3:prefix": [f"{CHECKPOINTS_PREFIX}/*", f"{MODELS_PREFIX}/*"]}
                },
            )
        )
        # kms:Encrypt too: CreateTrainingJob's OutputDataConfig.KmsKeyId "the SageMaker execution
        # role must include permissions to call kms:Encrypt" (API reference).
        use_key_via(
            role,
            encryption_key,
            services=["s3"],
            actions=(*READ_WRITE, "kms:Encrypt"),
            sid="UseKeyViaS3",
        )
        # Training volumes of EBS-backed instance types are encrypted with the key: SageMaker
        # creates a grant for the job's volume with the execution role.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="GrantKeyToTrainingVolumes",
                actions=["kms:CreateGrant"],
                resources=[encryption_key.key_arn],
                conditions={
                    "Bool": {"kms:GrantIsForAWSResource": "true"},
                    "StringEquals": {
                        "kms:ViaService": f"sagemaker.{cdk.Stack.of(self).region}.amazonaws.com"
                    },
                },
            )
        )
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
        # JumpStart base models (base_model: jumpstart:<id>): the region's JumpStart buckets
        # (public, and gated for licensed models) through the S3 gateway endpoint. Reading from
        # another account's bucket needs the identity policy to allow it too.
        jumpstart = [
            f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}" for bucket in jumpstart_buckets(cdk.Aws.REGION)
        ]
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadJumpStartModels",
                actions=["s3:GetObject"],
                resources=[f"{bucket}/*" for bucket in jumpstart],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListJumpStartModels", actions=["s3:ListBucket"], resources=jumpstart
            )
        )
        _pull_images(
            role, [custom_image_repository.repository_arn, script_mode_image.repository_arn(self)]
        )
        log_groups = _logs_and_metrics(role, arns.training_log_group, "/aws/sagemaker/TrainingJobs")
        _vpc_access(role, vpc)
        if judge_model_ids:
            role.add_to_policy(judge_model_statement(cdk.Stack.of(self), judge_model_ids))
        wildcards = [
            datasets_objects,
            model_objects,
            checkpoint_objects,
            log_groups,
            *(f"{bucket}/*" for bucket in jumpstart),
        ]
        if mlflow_app_arn is not None:
            for statement in mlflow_app_statements(mlflow_app_arn, artifacts_bucket):
                role.add_to_policy(statement)
            wildcards.append(artifacts_bucket.arn_for_objects(f"{MLFLOW_ARTIFACT_PREFIX}/*"))
        acknowledge_wildcard_resources(
            role.policy,
            "Channels are any objects of the platform's datasets bucket; each job writes its "
            "model under models/<run>/, checkpoints under checkpoints/<run>/ and MLflow "
            "artifacts under mlflow/; each job's logs go to its own stream in the SageMaker "
            "training log group; JumpStart base models are read from the region's JumpStart "
            "buckets (weights folders named by the model's metadata).",
            *wildcards,
        )
        _acknowledge_service_wildcards(role)


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
        arns: PlatformArns,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=_SAGEMAKER,
            description="Models and endpoints deployed by the LLM fine-tuning workflow",
        )
        model_objects = artifacts_bucket.arn_for_objects(f"{MODELS_PREFIX}/*")
        capture_objects = artifacts_bucket.arn_for_objects(f"{DATA_CAPTURE_PREFIX}/*")
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
                conditions={"StringLike": {"s3:prefix": [f"{MODELS_PREFIX}/*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteDataCapture", actions=["s3:PutObject"], resources=[capture_objects]
            )
        )
        use_key_via(role, encryption_key, services=["s3"], actions=READ_WRITE, sid="UseKeyViaS3")
        _pull_images(role, [serving_image.repository_arn(self)])
        # SageMaker writes each endpoint's logs to /aws/sagemaker/Endpoints/<endpoint name>.
        log_groups = _logs_and_metrics(role, arns.endpoint_log_groups, "/aws/sagemaker/Endpoints")
        _vpc_access(role, vpc)
        acknowledge_wildcard_resources(
            role.policy,
            "Models are read from models/<run>/ and request/response samples captured under "
            "data-capture/<endpoint>/; each endpoint <prefix>-<name> logs to its own group "
            "/aws/sagemaker/Endpoints/<prefix>-<name>.",
            model_objects,
            capture_objects,
            log_groups,
        )
        _acknowledge_service_wildcards(role)


def _acknowledge_service_wildcards(role: ManagedPolicyRole) -> None:
    acknowledge_wildcard_resources(
        role.policy,
        "EC2 Describe*, ECR GetAuthorizationToken and CloudWatch PutMetricData support no "
        "resource scoping; interface creation is confined to the platform VPC and metrics to "
        "the SageMaker namespace by conditions.",
        "*",
    )
