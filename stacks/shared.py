"""What the stateless stacks take from the stateful ones, as one typed bundle."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.arns import PlatformArns
from stacks.components.private_network import PrivateNetwork
from stacks.config import PlatformConfig
from stacks.data_stack import import_bucket

__all__ = ["SharedResources"]


@dataclass(frozen=True, kw_only=True)
class SharedResources:
    """The configuration, network, key, buckets (by name), registry group and MLflow App."""

    config: PlatformConfig
    network: PrivateNetwork
    encryption_key: kms.IKey
    datasets_bucket_name: str
    artifacts_bucket_name: str
    model_package_group_name: str
    mlflow_app_arn: str | None

    def buckets(self, scope: Construct) -> tuple[s3.IBucket, s3.IBucket]:
        """The datasets and artifacts buckets, imported into ``scope`` with the key."""
        return (
            import_bucket(
                scope,
                "DatasetsBucket",
                bucket_name=self.datasets_bucket_name,
                encryption_key=self.encryption_key,
            ),
            import_bucket(
                scope,
                "ArtifactsBucket",
                bucket_name=self.artifacts_bucket_name,
                encryption_key=self.encryption_key,
            ),
        )

    def arns(self, scope: Construct) -> PlatformArns:
        return PlatformArns.of(
            scope,
            prefix=self.config.resource_name_prefix,
            model_package_group=self.model_package_group_name,
            state_machine_name=self.config.state_machine_name,
        )
