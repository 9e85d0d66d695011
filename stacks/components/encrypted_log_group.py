"""CloudWatch log groups encrypted with the platform key."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct


def encrypted_log_group(
    scope: Construct,
    construct_id: str,
    *,
    encryption_key: kms.IKey,
    retention_days: int,
    log_group_name: str | None = None,
) -> logs.LogGroup:
    """A log group encrypted with ``encryption_key``, kept ``retention_days`` and retained on
    stack deletion (logs are evidence; deleting a stack must not delete them)."""
    log_group = logs.LogGroup(
        scope,
        construct_id,
        log_group_name=log_group_name,
        encryption_key=encryption_key,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    # The config holds retention as days (validated against the periods CloudWatch accepts);
    # RetentionDays is a name-valued enum, so set the number on the L1 resource.
    cfn_log_group = log_group.node.default_child
    assert isinstance(cfn_log_group, logs.CfnLogGroup)
    cfn_log_group.retention_in_days = retention_days
    return log_group
