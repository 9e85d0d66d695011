"""Where run outcomes are announced: an encrypted SNS topic with optional e-mail subscribers."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class RunNotifications(Construct):
    """An SNS topic encrypted with the platform key that refuses unencrypted (non-TLS) publishes.

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
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
