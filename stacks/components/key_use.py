"""Use of the platform key through the services that encrypt with it on a principal's behalf.

Every principal of the platform uses the key only through a service (S3 for SSE-KMS objects,
SNS for the encrypted topic, SageMaker for training volumes): ``kms:ViaService`` keeps it that
way, so credentials taken out of a job or a notebook cannot decrypt data with KMS directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

__all__ = ["READ", "READ_WRITE", "use_key_via"]

#: What reading an SSE-KMS object needs, and what writing one (multipart included) needs.
READ = ("kms:Decrypt",)
READ_WRITE = ("kms:Decrypt", "kms:GenerateDataKey")


def use_key_via(
    principal: iam.IGrantable,
    key: kms.IKey,
    *,
    services: Sequence[str],
    actions: Sequence[str],
    sid: str,
) -> None:
    """Let ``principal`` use ``key`` for ``actions`` only through ``services`` (e.g. ``s3``)."""
    region = cdk.Stack.of(key).region
    principal.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=list(actions),
            resources=[key.key_arn],
            conditions={
                "StringEquals": {
                    "kms:ViaService": [f"{service}.{region}.amazonaws.com" for service in services]
                }
            },
        )
    )
