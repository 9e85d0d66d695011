"""cdk-nag v3 wiring: the five rule packs, and one way to acknowledge a finding on a resource.

An acknowledgement always sits on the construct it excuses, names one rule (one finding for
rules such as IAM5 that report several), and gives a reason specific to this platform.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aws_cdk as cdk
import cdk_nag
from constructs import IConstruct

__all__ = [
    "COMPLIANCE_PACKS",
    "acknowledge",
    "acknowledge_in_packs",
    "acknowledge_wildcard_actions",
    "acknowledge_wildcard_resources",
    "add_nag_packs",
]

#: The pack names cdk-nag uses as the prefix of its rule ids.
COMPLIANCE_PACKS = ("AwsSolutions", "HIPAA.Security", "NIST.800.53.R5", "PCI.DSS.321", "Serverless")

#: HIPAA, NIST 800-53 R5 and PCI DSS share most rule names (they derive from AWS Config rules).
REGULATORY_PACKS = ("HIPAA.Security", "NIST.800.53.R5", "PCI.DSS.321")


def add_nag_packs(app: cdk.App) -> None:
    """Run all five packs as CDK validations: synth fails on any unacknowledged finding and
    writes ``validation-report.json`` (findings and acknowledgements) into the cloud assembly."""
    validations = cdk.Validations.of(app)
    validations.add_plugins(cdk_nag.AwsSolutionsChecks(app))
    validations.add_plugins(cdk_nag.HIPAASecurityChecks(app))
    validations.add_plugins(cdk_nag.NIST80053R5Checks(app))
    validations.add_plugins(cdk_nag.PCIDSS321Checks(app))
    validations.add_plugins(cdk_nag.ServerlessChecks(app))


def acknowledge(construct: IConstruct, reason: str, *rule_ids: str) -> None:
    """Acknowledge each of ``rule_ids`` (e.g. ``AwsSolutions-IAM5[Action::s3:List*]``) on
    ``construct`` with ``reason``."""
    if len(reason) < 40:
        raise ValueError(f"acknowledgement of {rule_ids} needs a specific reason, got {reason!r}")
    for rule_id in rule_ids:
        pack = rule_id.split("-", 1)[0]
        if pack not in COMPLIANCE_PACKS:
            raise ValueError(f"{rule_id!r} does not start with a pack name ({COMPLIANCE_PACKS})")
        cdk.Validations.of(construct).acknowledge(
            cdk.Acknowledgment(id=f"{pack}::{rule_id}", reason=reason)
        )


def acknowledge_in_packs(
    construct: IConstruct,
    reason: str,
    rule: str,
    packs: Iterable[str] = REGULATORY_PACKS,
) -> None:
    """Acknowledge ``rule`` (e.g. ``S3BucketReplicationEnabled``) in each of ``packs``."""
    acknowledge(construct, reason, *(f"{pack}-{rule}" for pack in packs))


def acknowledge_wildcard_actions(policy: IConstruct, reason: str, *actions: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for each wildcard action (e.g. ``s3:GetObject*``)."""
    acknowledge(policy, reason, *(f"AwsSolutions-IAM5[Action::{action}]" for action in actions))


def acknowledge_wildcard_resources(policy: IConstruct, reason: str, *resources: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for each wildcard resource ARN, given as the same value
    (tokens included) that the policy statement uses; it is rendered the way cdk-nag names the
    finding (``<AWS::Region>``, ``<LogicalId.Attribute>``)."""
    stack = cdk.Stack.of(policy)
    acknowledge(
        policy,
        reason,
        *(f"AwsSolutions-IAM5[Resource::{_render(stack.resolve(arn))}]" for arn in resources),
    )


def _render(value: Any) -> str:
    """Render a resolved CloudFormation value as cdk-nag writes it in a finding id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_render(part) for part in parts)
        if function == "Fn::ImportValue":
            return _render(argument)
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding id")
