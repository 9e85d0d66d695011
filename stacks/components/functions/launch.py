"""The launch function: resolves run requests inside the workflow and starts runs."""

from __future__ import annotations

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from runspec.settings import PlatformSettings
from stacks.components.arns import PlatformArns
from stacks.components.functions.placement import FunctionPlacement
from stacks.components.key_use import READ, use_key_via
from stacks.components.project_function import ProjectFunction
from stacks.data_stack import RUNS_PREFIX
from stacks.nag import acknowledge_wildcard_resources

__all__ = ["LaunchFunction"]


class LaunchFunction(ProjectFunction):
    """Reads dataset objects (their versions to pin them, then the pinned versions' contents
    through the training code's data rules: launch_run.datacheck), the training image's digest,
    earlier runs' records and package approval (to deploy them), the endpoints of the platform
    (to undeploy them), and starts the workflow; nothing else.

    Props:
        settings: the platform settings it reads from its environment.
        datasets_bucket / artifacts_bucket / image_repository / arns: what it reads and starts.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        placement: FunctionPlacement,
        function_name: str,
        settings: PlatformSettings,
        datasets_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        image_repository: ecr.IRepository,
        arns: PlatformArns,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            handler="launch_run.handler.handler",
            description="Validates and resolves fine-tuning run requests; starts runs",
            environment=settings.to_env(),
            # Pinning a prefix channel lists up to 1,000 object versions.
            timeout_seconds=120,
            function_name=function_name,
            **placement.props(),
        )
        runs = artifacts_bucket.arn_for_objects(f"{RUNS_PREFIX}/*")
        datasets = datasets_bucket.arn_for_objects("*")
        grants = [
            # Deploying an earlier run reads its record and checks its package's approval. Listing
            # the runs prefix makes a missing record a 404 (no such run), not a 403.
            ("ReadRunToDeploy", ["s3:GetObject"], [runs], None),
            (
                "FindRunRecords",
                ["s3:ListBucket"],
                [artifacts_bucket.bucket_arn],
                {"StringLike": {"s3:prefix": [f"{RUNS_PREFIX}/*"]}},
            ),
            ("CheckPackageApproval", ["sagemaker:DescribeModelPackage"], [arns.packages], None),
            ("PinDatasetVersions", ["s3:GetObject", "s3:GetObjectVersion"], [datasets], None),
            (
                "ListDatasetVersions",
                ["s3:ListBucket", "s3:ListBucketVersions"],
                [datasets_bucket.bucket_arn],
                None,
            ),
            (
                "PinTrainingImageDigest",
                ["ecr:DescribeImages"],
                [image_repository.repository_arn],
                None,
            ),
            # Undeploy: which run an endpoint of the platform serves (its config's run tag).
            (
                "FindEndpointToUndeploy",
                [
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:ListTags",
                ],
                [arns.endpoints, arns.endpoint_configs],
                None,
            ),
            ("StartRuns", ["states:StartExecution"], [arns.state_machine], None),
            ("FindExistingRun", ["states:DescribeExecution"], [arns.executions], None),
        ]
        for sid, actions, resources, conditions in grants:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid=sid, actions=actions, resources=resources, conditions=conditions
                )
            )
        use_key_via(
            self.role, placement.encryption_key, services=["s3"], actions=READ, sid="ReadEncrypted"
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "Requests name dataset objects anywhere in the platform's datasets bucket; the "
            "function reads them only: their versions, to pin them, and the pinned versions' "
            "rows, checked against the training code's data rules before a job starts. "
            "Existing runs are "
            "executions named by run id under the platform's one state machine; run records "
            "live under runs/<run id>/ and packages are numbered versions in the platform's "
            "group.",
            datasets,
            arns.executions,
            runs,
            arns.packages,
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "An undeploy request names any endpoint of the platform (<prefix>-*); the function "
            "only describes it, its endpoint config and the config's tags, to find the run it "
            "serves.",
            arns.endpoints,
            arns.endpoint_configs,
        )
