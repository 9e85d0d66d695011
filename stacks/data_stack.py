"""Stateful: the platform key and the buckets for datasets, artifacts and access logs."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.platform_key import PlatformKey
from stacks.components.secure_bucket import AccessLogsBucket, SecureBucket
from stacks.config import PlatformConfig

#: Prefixes of the artifacts bucket, shared by the stacks that grant on them.
CHECKPOINTS_PREFIX = "checkpoints"
MODELS_PREFIX = "models"
DATA_CAPTURE_PREFIX = "data-capture"
#: Run records (runs/<run id>/run.json), written by the record function.
RUNS_PREFIX = "runs"

_SINGLE_REGION = (
    "The platform is deployed to one region by design; {what} is protected by versioning and "
    "RETAIN. Cross-region copies are an account-level backup decision outside this project."
)


def bucket_name(config: PlatformConfig, purpose: str) -> str:
    """The deterministic name of a platform bucket: ``<prefix>-<purpose>-<account>-<region>``.

    Deterministic so that other stacks import buckets by name (no cross-stack export to pin the
    data stack) and IAM findings name stable resources. S3 names are global: the account and
    region make them unique. A retained bucket keeps its name: redeploying the same prefix after
    deleting the stack needs the old bucket emptied and deleted, or another prefix.
    """
    return f"{config.prefix}-{purpose}-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"


def import_bucket(
    scope: Construct, construct_id: str, *, bucket_name: str, encryption_key: kms.IKey
) -> s3.IBucket:
    """A platform bucket in another stack, by name, with its key (so grants include KMS)."""
    return s3.Bucket.from_bucket_attributes(
        scope, construct_id, bucket_name=bucket_name, encryption_key=encryption_key
    )


class DataStack(cdk.Stack):
    """The KMS key, and buckets for datasets (versioned, so a run pins the exact object versions
    it trained on), artifacts (models, checkpoints, MLflow, endpoint data capture) and S3 access
    logs. Everything here is retained when the stack is deleted."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: PlatformConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.encryption_key = PlatformKey(self, "PlatformKey", alias=f"alias/{config.prefix}").key
        self.datasets_bucket_name = bucket_name(config, "datasets")
        self.artifacts_bucket_name = bucket_name(config, "artifacts")
        self.access_logs_bucket = AccessLogsBucket(
            self,
            "AccessLogs",
            bucket_name=bucket_name(config, "access-logs"),
            retention_days=config.access_log_retention_days,
        ).bucket
        self.datasets_bucket = SecureBucket(
            self,
            "Datasets",
            bucket_name=self.datasets_bucket_name,
            encryption_key=self.encryption_key,
            access_logs_bucket=self.access_logs_bucket,
            replication_reason=_SINGLE_REGION.format(what="every dataset version"),
        ).bucket
        self.artifacts_bucket = SecureBucket(
            self,
            "Artifacts",
            bucket_name=self.artifacts_bucket_name,
            encryption_key=self.encryption_key,
            access_logs_bucket=self.access_logs_bucket,
            replication_reason=_SINGLE_REGION.format(what="every model artifact"),
            lifecycle_rules=[
                # Checkpoints only matter while a (spot) job may restart; the final model is
                # written under models/.
                s3.LifecycleRule(
                    id="expire-checkpoints",
                    prefix=f"{CHECKPOINTS_PREFIX}/",
                    expiration=cdk.Duration.days(config.checkpoint_expiry_days),
                    noncurrent_version_expiration=cdk.Duration.days(1),
                ),
            ],
        ).bucket

        cdk.CfnOutput(self, "DatasetsBucketName", value=self.datasets_bucket.bucket_name)
        cdk.CfnOutput(self, "ArtifactsBucketName", value=self.artifacts_bucket.bucket_name)
        cdk.CfnOutput(self, "KeyArn", value=self.encryption_key.key_arn)
