"""Stateful: the VPC, its endpoints and flow logs."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.private_network import PrivateNetwork
from stacks.config import PlatformConfig


class NetworkStack(cdk.Stack):
    """Private subnets in two AZs with VPC endpoints for every AWS API the platform calls
    (bedrock-runtime when judge models are configured); NAT egress when the config allows it;
    flow logs to an encrypted log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PlatformConfig,
        encryption_key: kms.IKey,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.network = PrivateNetwork(
            self,
            "Network",
            cidr=config.vpc_cidr,
            existing_vpc=config.existing_vpc,
            internet_egress=config.internet_egress,
            encryption_key=encryption_key,
            log_retention_days=config.log_retention_days,
            bedrock_runtime=bool(config.judge_model_ids),
        )
        cdk.CfnOutput(self, "VpcId", value=self.network.vpc.vpc_id)
