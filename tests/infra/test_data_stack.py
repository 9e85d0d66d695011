"""Data stack: the key and the buckets carry the platform's security baseline."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match

from tests.infra.synth import Synthesized

KEY_ARN = {"Fn::GetAtt": [Match.string_like_regexp("^PlatformKey"), "Arn"]}


def buckets(dev: Synthesized) -> dict[str, dict[str, Any]]:
    return dev.template("Data").find_resources("AWS::S3::Bucket")


def test_key_rotates_and_is_retained(dev: Synthesized) -> None:
    template = dev.template("Data")
    template.has_resource(
        "AWS::KMS::Key",
        {
            "Properties": {"EnableKeyRotation": True},
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_key_lets_cloudwatch_logs_encrypt_only_this_accounts_log_groups(dev: Synthesized) -> None:
    dev.template("Data").has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "AllowCloudWatchLogsForThisAccount",
                                "Condition": {
                                    "ArnLike": {
                                        "kms:EncryptionContext:aws:logs:arn": Match.any_value()
                                    }
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_three_buckets_all_retained_private_and_owner_enforced(dev: Synthesized) -> None:
    found = buckets(dev)
    assert len(found) == 3
    for bucket in found.values():
        assert bucket["DeletionPolicy"] == "Retain"
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["OwnershipControls"] == {
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
        }
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}


@pytest.mark.parametrize("purpose", ["datasets", "artifacts"])
def test_data_buckets_use_sse_kms_with_the_platform_key_and_log_access(
    dev: Synthesized, purpose: str
) -> None:
    dev.template("Data").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": {"Fn::Join": ["", Match.array_with([f"llmft-dev-{purpose}-"])]},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": KEY_ARN,
                        },
                    }
                ]
            },
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": Match.string_like_regexp("^AccessLogs")},
                "LogFilePrefix": Match.any_value(),
            },
        },
    )


def test_every_bucket_refuses_plain_http(dev: Synthesized) -> None:
    policies = dev.template("Data").find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert {
            "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": Match.any_value(),
        }.keys() <= next(s for s in statements if s["Effect"] == "Deny").keys()
        deny = next(s for s in statements if s["Effect"] == "Deny")
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_artifacts_bucket_expires_checkpoints_only(dev: Synthesized) -> None:
    dev.template("Data").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        {
                            "Id": "expire-checkpoints",
                            "Prefix": "checkpoints/",
                            "ExpirationInDays": 14,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                            "Status": "Enabled",
                        }
                    ]
                )
            }
        },
    )


def test_datasets_never_expire_so_runs_stay_reproducible(dev: Synthesized) -> None:
    for bucket in buckets(dev).values():
        name = bucket["Properties"]["BucketName"]["Fn::Join"][1][0]
        if name.startswith("llmft-dev-datasets"):
            rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
            assert all("ExpirationInDays" not in rule for rule in rules)
            assert all("NoncurrentVersionExpiration" not in rule for rule in rules)
