"""S3 buckets with the platform's security baseline."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.nag import acknowledge_in_packs


class SecureBucket(Construct):
    """A bucket that blocks public access, refuses plain HTTP, encrypts with the platform key
    (with an S3 Bucket Key to cut KMS request costs), enforces bucket-owner object ownership,
    logs server access to ``access_logs_bucket`` and is retained when its stack is deleted.

    Props:
        bucket_name: the bucket's name.
        encryption_key: the customer-managed key for SSE-KMS.
        access_logs_bucket: where server access logs go, under ``<construct_id>/``.
        versioned: keep every object version (default True).
        lifecycle_rules: extra lifecycle rules (default none; incomplete multipart uploads are
            always aborted after 7 days).
        replication_reason: why the bucket is not replicated cross-region; HIPAA, NIST and PCI
            checks ask for replication and the platform is single-region by design.

    Attributes:
        bucket: the S3 bucket.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        encryption_key: kms.IKey,
        access_logs_bucket: s3.IBucket,
        replication_reason: str,
        versioned: bool = True,
        lifecycle_rules: Sequence[s3.LifecycleRule] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=encryption_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=access_logs_bucket,
            server_access_logs_prefix=f"{construct_id}/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
                *lifecycle_rules,
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge_in_packs(self.bucket, replication_reason, "S3BucketReplicationEnabled")


class AccessLogsBucket(Construct):
    """The target of S3 server access logging for the platform's buckets.

    S3 delivers server access logs only to buckets encrypted with SSE-S3 (not SSE-KMS): that
    finding is acknowledged here, on this bucket only. (cdk-nag already exempts a log target from
    logging its own access, which would loop.)

    Props:
        bucket_name: the bucket's name.
        retention_days: log objects (and their noncurrent versions) expire after this many days.

    Attributes:
        bucket: the S3 bucket.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket_name: str, retention_days: int
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(1),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge_in_packs(
            self.bucket,
            "S3 server access log delivery only supports SSE-S3 on the target bucket, not SSE-KMS; "
            "the logs hold request metadata, never dataset or model content.",
            "S3DefaultEncryptionKMS",
        )
        acknowledge_in_packs(
            self.bucket,
            "Access logs are an audit trail kept in the platform's home region for the configured "
            "retention; cross-region replication of logs is left to the account's log archive.",
            "S3BucketReplicationEnabled",
        )
