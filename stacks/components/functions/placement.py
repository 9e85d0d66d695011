"""Where and how every function of the platform runs (one bundle, passed to each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms

from stacks.components.private_network import PrivateNetwork

__all__ = ["FunctionPlacement"]


@dataclass(frozen=True, kw_only=True)
class FunctionPlacement:
    """The code folder, network and log settings every ProjectFunction shares."""

    code_dir: Path
    network: PrivateNetwork
    encryption_key: kms.IKey
    log_retention_days: int

    def props(self) -> dict[str, Any]:
        return {
            "code_dir": self.code_dir,
            "vpc": self.network.vpc,
            "subnets": ec2.SubnetSelection(subnets=self.network.private_subnets.subnets),
            "security_group": self.network.workload_security_group,
            "encryption_key": self.encryption_key,
            "log_retention_days": self.log_retention_days,
        }
