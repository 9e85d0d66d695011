"""Where run outcomes are announced: an encrypted SNS topic with optional e-mail subscribers."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class RunNotifications(Construct):
    """An SNS topic encrypted with the platform key that refuses unencrypted (non-TLS) publishes,
    and that the account's CloudWatch alarms may publish to.

    ``enforce_ssl`` gives the topic a policy of its own, which replaces SNS's default policy: an
    alarm action then needs an explicit Allow for ``cloudwatch.amazonaws.com`` (scoped to this
    account's alarms); the key policy lets CloudWatch use the key (PlatformKey).

    Props:
        topic_name: the topic's name.
        encryption_key: the platform key.
        emails: addresses to subscribe (each confirms by e-mail).

    Attributes:
        topic: the SNS topic.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topic_name: str,
        encryption_key: kms.IKey,
        emails: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=topic_name,
            display_name="LLM fine-tuning runs",
            master_key=encryption_key,
            enforce_ssl=True,
        )
        stack = cdk.Stack.of(self)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsOfThisAccountPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name="*",
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
