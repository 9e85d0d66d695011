"""The smoke-test function: a freshly deployed endpoint answers, and computes what training did."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.arns import PlatformArns
from stacks.components.functions.placement import FunctionPlacement
from stacks.components.key_use import READ, use_key_via
from stacks.components.project_function import ProjectFunction
from stacks.data_stack import MODELS_PREFIX
from stacks.nag import acknowledge_wildcard_resources

__all__ = ["SmokeTestFunction"]


class SmokeTestFunction(ProjectFunction):
    """Invokes the platform's endpoints and reads the serving reference each training job
    writes beside its model; nothing else."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        placement: FunctionPlacement,
        artifacts_bucket: s3.IBucket,
        arns: PlatformArns,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            handler="smoke_test.handler.handler",
            description="Checks a freshly deployed endpoint against its training reference",
            environment={},
            # A cold TGI endpoint can take tens of seconds for its first generation.
            timeout_seconds=120,
            **placement.props(),
        )
        references = artifacts_bucket.arn_for_objects(f"{MODELS_PREFIX}/*/serving_reference.json")
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeRunEndpoints",
                actions=["sagemaker:InvokeEndpoint"],
                resources=[arns.endpoints],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                # The smoke test scores the example training scored, next to the model.
                sid="ReadServingReference",
                actions=["s3:GetObject"],
                resources=[references],
            )
        )
        use_key_via(
            self.role, placement.encryption_key, services=["s3"], actions=READ, sid="ReadEncrypted"
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "Runs deploy to endpoints named <prefix>-<name>; the smoke test may call only those, "
            "and reads only the serving reference each training job writes beside its model "
            "(models/<run>/<job>/output/model/serving_reference.json).",
            arns.endpoints,
            references,
        )
