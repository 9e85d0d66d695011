"""The SageMaker Model Registry group that fine-tuned models are registered in."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """A Model Package Group, retained on stack deletion (it holds the approval history).

    Props:
        group_name: name of the group (deterministic, so other stacks can scope IAM to it).

    Attributes:
        group: the L1 group.
        group_name / group_arn: its name and ARN.
    """

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str) -> None:
        super().__init__(scope, construct_id)
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description=(
                "LoRA/QLoRA fine-tuned LLMs registered by the fine-tuning workflow; each version "
                "carries its evaluation metrics, training job, dataset versions and image."
            ),
        )
        self.group.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.group_name = group_name
        self.group_arn = self.group.attr_model_package_group_arn
