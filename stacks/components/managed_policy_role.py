"""An IAM role whose permissions live in a customer-managed policy instead of an inline one."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iam as iam
from constructs import Construct


class ManagedPolicyRole(iam.Role):
    """An ``iam.Role`` whose ``add_to_policy`` and every ``grant_*`` aimed at it write into one
    customer-managed policy attached to it, rather than an inline ``DefaultPolicy``.

    HIPAA, NIST 800-53 and PCI DSS (IAMNoInlinePolicy) require managed policies: they are
    versioned, reusable and visible to IAM Access Analyzer as standalone documents. Taking over
    ``add_to_principal_policy`` keeps the CDK grant API unchanged for callers.

    Attributes:
        policy: the managed policy holding the role's permissions.
    """

    def __init__(self, scope: Construct, construct_id: str, **role_props: Any) -> None:
        super().__init__(scope, construct_id, **role_props)
        self.policy = iam.ManagedPolicy(self, "Policy", roles=[self])

    def add_to_principal_policy(
        self, statement: iam.PolicyStatement
    ) -> iam.AddToPrincipalPolicyResult:
        self.policy.add_statements(statement)
        return iam.AddToPrincipalPolicyResult(statement_added=True, policy_dependable=self.policy)
