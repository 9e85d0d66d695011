"""The execution role of Studio users and spaces, scoped to this platform's resources.

What a data scientist does in Studio, and nothing beyond it: upload and read datasets (never
delete a version a run pinned), read models and run records (never the endpoints' captured
prompts), start, watch and stop runs (also with the ``finetune`` CLI, which reads the stacks'
outputs and the launch function's settings), approve or reject a model (never rewrite the
metadata the evaluation gate compares), log to MLflow, invoke and inspect the platform's
endpoints, and manage their own apps and spaces (never another user's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from launch_run.base_models import jumpstart_buckets
from runspec.run import PACKAGE_METADATA_KEYS
from stacks.components.arns import PlatformArns, sagemaker_arn
from stacks.components.key_use import READ_WRITE, use_key_via
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.components.mlflow_tracking import MLFLOW_ARTIFACT_PREFIX
from stacks.components.sagemaker_roles import mlflow_app_statements
from stacks.data_stack import DATA_CAPTURE_PREFIX, MODELS_PREFIX, RUNS_PREFIX
from stacks.nag import acknowledge_wildcard_actions, acknowledge_wildcard_resources

#: SageMaker List and Search APIs take no resource-level permissions (all but ListTags).
_LIST_ACTIONS = [
    "sagemaker:ListTrainingJobs",
    "sagemaker:ListEndpoints",
    "sagemaker:ListModelPackageGroups",
    "sagemaker:ListModelPackages",
    "sagemaker:ListExperiments",
    "sagemaker:ListTrials",
    "sagemaker:ListTrialComponents",
    "sagemaker:ListApps",
    "sagemaker:ListSpaces",
    "sagemaker:ListUserProfiles",
    "sagemaker:ListDomains",
    "sagemaker:Search",
    "states:ListStateMachines",
]


class StudioExecutionRole(Construct):
    """The default role of the Studio domain's users and spaces. No managed *FullAccess policy.

    Props:
        datasets_bucket / artifacts_bucket / encryption_key: the platform's data.
        arns: the platform's named resources (state machine, packages, jobs, endpoints...).
        mlflow_app_arn: the MLflow App, or None when MLflow is off.
        stack_names: the stacks whose outputs the ``finetune`` CLI reads.
        launch_function_name: the launch function, whose settings the CLI validates with.

    Attributes:
        role: the IAM role.
        policies: its managed policies, one per concern (IAM limits each to 6,144 characters).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        datasets_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        encryption_key: kms.IKey,
        arns: PlatformArns,
        mlflow_app_arn: str | None,
        stack_names: Sequence[str],
        launch_function_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker Studio users and spaces of the LLM fine-tuning platform",
        )
        self.policies: dict[str, iam.ManagedPolicy] = {"data": role.policy}
        self._data(datasets_bucket, artifacts_bucket, encryption_key)
        self._runs(arns, stack_names, launch_function_name)
        self._models(arns)
        if mlflow_app_arn is not None:
            mlflow = self._policy("Mlflow")
            mlflow.add_statements(*mlflow_app_statements(mlflow_app_arn, artifacts_bucket))
            mlflow.add_statements(
                iam.PolicyStatement(
                    sid="BrowseMlflowApp",
                    actions=[
                        "sagemaker:DescribeMlflowApp",
                        "sagemaker:CreatePresignedMlflowAppUrl",
                        "sagemaker-mlflow:Get*",
                        "sagemaker-mlflow:Search*",
                        "sagemaker-mlflow:List*",
                    ],
                    resources=[mlflow_app_arn],
                )
            )
            acknowledge_wildcard_actions(
                mlflow,
                "Browsing runs in the MLflow UI reads through MLflow's Get/Search/List REST "
                "calls (one sagemaker-mlflow action each); read-only, on the one MLflow App.",
                "sagemaker-mlflow:Get*",
                "sagemaker-mlflow:Search*",
                "sagemaker-mlflow:List*",
            )
            acknowledge_wildcard_resources(
                mlflow,
                "MLflow artifacts are logged and read by key under mlflow/ of the artifacts "
                "bucket (the App's artifact store).",
                artifacts_bucket.arn_for_objects(f"{MLFLOW_ARTIFACT_PREFIX}/*"),
            )

    def _policy(self, name: str) -> iam.ManagedPolicy:
        policy = iam.ManagedPolicy(self, name, roles=[self.role])
        self.policies[name] = policy
        return policy

    def _data(self, datasets: s3.IBucket, artifacts: s3.IBucket, key: kms.IKey) -> None:
        role = self.role
        dataset_objects = datasets.arn_for_objects("*")
        jumpstart_metadata = (
            f"arn:{cdk.Aws.PARTITION}:s3:::{jumpstart_buckets(cdk.Aws.REGION)[0]}/*"
        )
        readable = [
            artifacts.arn_for_objects(f"{prefix}/*")
            for prefix in (MODELS_PREFIX, RUNS_PREFIX, MLFLOW_ARTIFACT_PREFIX)
        ]
        statements = [
            # Deleting without a version id only adds a delete marker: pinned versions stay.
            (
                "ReadWriteDatasets",
                ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject"],
                [dataset_objects],
            ),
            ("UploadLargeDatasets", ["s3:AbortMultipartUpload"], [dataset_objects]),
            (
                "ListDatasets",
                ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
                [datasets.bucket_arn],
            ),
            ("ReadModelsAndRuns", ["s3:GetObject"], readable),
            # finetune launch / the notebook resolve jumpstart:<id> base models with the
            # SageMaker SDK, which reads the JumpStart metadata (manifest, specs) there.
            ("ReadJumpStartMetadata", ["s3:GetObject"], [jumpstart_metadata]),
        ]
        for sid, actions, resources in statements:
            role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=resources))
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListModelsAndRuns",
                actions=["s3:ListBucket"],
                resources=[artifacts.bucket_arn],
                conditions={
                    "StringLike": {
                        "s3:prefix": [
                            f"{prefix}/*"
                            for prefix in (MODELS_PREFIX, RUNS_PREFIX, MLFLOW_ARTIFACT_PREFIX)
                        ]
                    }
                },
            )
        )
        # Explicit, so that no later grant reopens them: runs pin dataset versions, and data
        # capture holds the endpoints' users' prompts.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="NeverRemovePinnedDatasetVersions",
                effect=iam.Effect.DENY,
                actions=[
                    "s3:DeleteObjectVersion",
                    "s3:PutObjectRetention",
                    "s3:PutObjectLegalHold",
                    "s3:BypassGovernanceRetention",
                ],
                resources=[dataset_objects],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="NeverReadCapturedPrompts",
                effect=iam.Effect.DENY,
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[artifacts.arn_for_objects(f"{DATA_CAPTURE_PREFIX}/*")],
            )
        )
        use_key_via(role, key, services=["s3"], actions=READ_WRITE, sid="UseKeyViaS3")
        acknowledge_wildcard_resources(
            role.policy,
            "Datasets are uploaded and read by key anywhere in the platform's datasets bucket; "
            "models, run records and MLflow artifacts are read by key under their prefixes of "
            "the artifacts bucket; JumpStart's metadata files (manifest and model specs) are "
            "read from the region's JumpStart bucket.",
            dataset_objects,
            *readable,
            jumpstart_metadata,
        )

    def _runs(self, arns: PlatformArns, stack_names: Sequence[str], launch_function: str) -> None:
        stack = cdk.Stack.of(self)
        stacks = [
            stack.format_arn(service="cloudformation", resource="stack", resource_name=f"{name}/*")
            for name in stack_names
        ]
        function = stack.format_arn(
            service="lambda",
            resource="function",
            resource_name=launch_function,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        # The CLI pins the training image by digest before starting, as the launch function
        # does: the image is a CDK asset in the bootstrap repository.
        asset_repository = stack.format_arn(
            service="ecr",
            resource="repository",
            resource_name=(
                f"cdk-{cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER}-container-assets-"
                f"{stack.account}-{stack.region}"
            ),
        )
        run_resources = [arns.training_jobs, arns.models, arns.endpoints, arns.endpoint_configs]
        tracking = [arns.experiments, arns.trials, arns.trial_components]
        statements = [
            ("RunFineTuningWorkflow", ["states:StartExecution", "states:ListExecutions"],
             [arns.state_machine]),
            ("WatchFineTuningRuns",
             ["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
             [arns.executions]),
            ("FindPlatformStacks", ["cloudformation:DescribeStacks"], stacks),
            ("ReadLaunchSettings", ["lambda:GetFunctionConfiguration"], [function]),
            ("PinTrainingImage", ["ecr:DescribeImages"], [asset_repository]),
            (
                "InspectRunResources",
                [
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:DescribeModel",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DescribeExperiment",
                    "sagemaker:DescribeTrial",
                    "sagemaker:DescribeTrialComponent",
                    "sagemaker:ListTags",
                ],
                [*run_resources, *tracking],
            ),
            ("InvokeRunEndpoints", ["sagemaker:InvokeEndpoint"], [arns.endpoints]),
            ("ListAndSearch", _LIST_ACTIONS, ["*"]),
            (
                "ReadTrainingLogs",
                ["logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents"],
                [arns.training_log_group],
            ),
        ]  # fmt: skip
        runs = self._policy("Runs")
        for sid, actions, resources in statements:
            runs.add_statements(iam.PolicyStatement(sid=sid, actions=actions, resources=resources))
        acknowledge_wildcard_resources(
            runs,
            "Runs are executions of the platform's one state machine; jobs, models, endpoints "
            "and experiments are named <prefix>-...; training logs are per-job streams; the CLI "
            "reads the two stacks it deploys by name. List and Search APIs take no resource.",
            *stacks,
            arns.executions,
            *run_resources,
            *tracking,
            arns.training_log_group,
            "*",
        )

    def _models(self, arns: PlatformArns) -> None:
        """Review and approve (or reject) registered models, but never rewrite the package
        metadata the gate compares ("must beat the best approved"): UpdateModelPackage only with
        an approval decision, and denied whenever it also sets one of the platform's keys or
        removes any."""
        models = self._policy("Models")
        models.add_statements(
            iam.PolicyStatement(
                sid="ReviewModels",
                actions=["sagemaker:DescribeModelPackageGroup", "sagemaker:DescribeModelPackage"],
                resources=[arns.package_group, arns.packages],
            )
        )
        models.add_statements(
            iam.PolicyStatement(
                sid="DecideApproval",
                actions=["sagemaker:UpdateModelPackage"],
                resources=[arns.packages],
                conditions={
                    "StringEquals": {"sagemaker:ModelApprovalStatus": ["Approved", "Rejected"]}
                },
            )
        )
        models.add_statements(
            iam.PolicyStatement(
                sid="NeverRemoveMetadata",
                effect=iam.Effect.DENY,
                actions=["sagemaker:UpdateModelPackage"],
                resources=[arns.packages],
                conditions={"Null": {"sagemaker:CustomerMetadataPropertiesToRemove": "false"}},
            )
        )
        # One Deny per key (conditions in one statement are ANDed), in a policy of their own:
        # with the task metrics they outgrow the 6,144 characters IAM allows a managed policy
        # beside the grants. Resource "*": a Deny may be broader than the Allow it guards, and
        # the shorter statements leave room for more keys.
        guard = self._policy("PackageMetadataGuard")
        for key in PACKAGE_METADATA_KEYS:
            guard.add_statements(
                iam.PolicyStatement(
                    sid=f"NeverRewrite{key.title().replace('_', '')}",
                    effect=iam.Effect.DENY,
                    actions=["sagemaker:UpdateModelPackage"],
                    resources=["*"],
                    conditions={"Null": {f"sagemaker:CustomerMetadataProperties/{key}": "false"}},
                )
            )
        acknowledge_wildcard_resources(
            models,
            "Packages are numbered versions of the platform's one group: users review and "
            "approve them, and the denies cover all of them on purpose.",
            arns.packages,
        )

    def allow_studio_apps(self, domain_id: str) -> None:
        """Users manage apps and spaces in ``domain_id``: their own private spaces and the apps
        in them, shared spaces, and apps of their profile - never another user's private space
        ("Give your users access to spaces", SageMaker AI Developer Guide). The owner is the
        caller's profile, ``${sagemaker:UserProfileName}``."""
        stack = cdk.Stack.of(self)
        apps = sagemaker_arn(self, "app", f"{domain_id}/*")
        spaces = sagemaker_arn(self, "space", f"{domain_id}/*")
        own_profile = stack.format_arn(
            service="sagemaker",
            resource="user-profile",
            resource_name=f"{domain_id}/${{sagemaker:UserProfileName}}",
        )
        space_actions = ["sagemaker:CreateSpace", "sagemaker:UpdateSpace", "sagemaker:DeleteSpace"]
        statements: list[tuple[str, list[str], list[str], dict[str, Any] | None]] = [
            ("OwnProfileApps", ["sagemaker:CreateApp", "sagemaker:DeleteApp"], [apps],
             {"Null": {"sagemaker:OwnerUserProfileArn": "true"}}),
            ("SharedSpacesWithoutOwner", space_actions, [spaces],
             {"Null": {"sagemaker:OwnerUserProfileArn": "true"}}),
            ("OwnSpaces", space_actions, [spaces],
             {"ArnLike": {"sagemaker:OwnerUserProfileArn": own_profile},
              "StringEquals": {"sagemaker:SpaceSharingType": ["Private", "Shared"]}}),
            ("AppsInOwnPrivateSpaces", ["sagemaker:CreateApp", "sagemaker:DeleteApp"], [apps],
             {"ArnLike": {"sagemaker:OwnerUserProfileArn": own_profile},
              "StringEquals": {"sagemaker:SpaceSharingType": ["Private"]}}),
            ("DescribeStudio",
             ["sagemaker:DescribeApp", "sagemaker:DescribeSpace", "sagemaker:DescribeUserProfile",
              "sagemaker:DescribeDomain"],
             [sagemaker_arn(self, "domain", domain_id), apps, spaces,
              sagemaker_arn(self, "user-profile", f"{domain_id}/*")], None),
            ("TagOnCreate", ["sagemaker:AddTags"], [apps, spaces],
             {"Null": {"sagemaker:TaggingAction": "false"}}),
        ]  # fmt: skip
        studio = self._policy("StudioApps")
        for sid, actions, resources, conditions in statements:
            studio.add_statements(
                iam.PolicyStatement(
                    sid=sid, actions=actions, resources=resources, conditions=conditions
                )
            )
        acknowledge_wildcard_resources(
            studio,
            "Studio names spaces and apps on demand; the grants are confined to this platform's "
            "domain and, by the owner conditions, to the caller's own private spaces.",
            apps,
            spaces,
            sagemaker_arn(self, "user-profile", f"{domain_id}/*"),
        )
