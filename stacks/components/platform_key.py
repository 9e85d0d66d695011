"""The platform's customer-managed KMS key."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class PlatformKey(Construct):
    """A customer-managed key with yearly rotation, retained on stack deletion.

    It encrypts the buckets, the Studio domain's EFS and volumes, training volumes and output,
    endpoint storage, SNS topics and every CloudWatch log group of the platform. The key policy
    lets CloudWatch Logs use it only for log groups in this account and region.

    Attributes:
        key: the KMS key.
    """

    def __init__(self, scope: Construct, construct_id: str, *, alias: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            alias=alias,
            description="Encrypts the LLM fine-tuning platform's data, logs and volumes",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            pending_window=cdk.Duration.days(30),
        )
        # CloudWatch Logs encrypts with the key on the log group's behalf; the encryption context
        # condition keeps that use to this account's log groups.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )
        # CloudWatch alarms notify through the KMS-encrypted run topic; SNS then needs
        # CloudWatch to be able to use the key, for alarms of this account only.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToNotifyEncryptedTopics",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
