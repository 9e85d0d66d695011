"""Compose the platform's stacks from one configuration."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from constructs import Construct

from stacks.config import PlatformConfig
from stacks.data_stack import DataStack
from stacks.network_stack import NetworkStack
from stacks.shared import SharedResources
from stacks.studio_stack import StudioStack
from stacks.tracking_stack import TrackingStack
from stacks.workflow_stack import WorkflowStack


@dataclass(frozen=True)
class Platform:
    data: DataStack
    network: NetworkStack
    tracking: TrackingStack
    studio: StudioStack
    workflow: WorkflowStack

    @property
    def stacks(self) -> tuple[cdk.Stack, ...]:
        return (self.data, self.network, self.tracking, self.studio, self.workflow)


def build_platform(scope: Construct, config: PlatformConfig) -> Platform:
    """Create every stack of the platform under ``scope`` (an App or a Stage)."""
    env = cdk.Environment(account=config.account, region=config.region)
    common = {"env": env, "tags": {"project": "llm-finetune", "environment": config.env_name}}
    data = DataStack(scope, "Data", stack_name=config.stack_name("data"), config=config, **common)
    network = NetworkStack(
        scope,
        "Network",
        stack_name=config.stack_name("network"),
        config=config,
        encryption_key=data.encryption_key,
        **common,
    )
    tracking = TrackingStack(
        scope,
        "Tracking",
        stack_name=config.stack_name("tracking"),
        config=config,
        artifacts_bucket_name=data.artifacts_bucket_name,
        encryption_key=data.encryption_key,
        **common,
    )
    shared = SharedResources(
        config=config,
        network=network.network,
        encryption_key=data.encryption_key,
        datasets_bucket_name=data.datasets_bucket_name,
        artifacts_bucket_name=data.artifacts_bucket_name,
        model_package_group_name=tracking.model_package_group_name,
        mlflow_app_arn=tracking.mlflow_app_arn,
    )
    studio = StudioStack(
        scope, "Studio", stack_name=config.stack_name("studio"), shared=shared, **common
    )
    workflow = WorkflowStack(
        scope, "Workflow", stack_name=config.stack_name("workflow"), shared=shared, **common
    )
    return Platform(data=data, network=network, tracking=tracking, studio=studio, workflow=workflow)
