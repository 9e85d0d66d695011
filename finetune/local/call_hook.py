"""One hook on every AWS SDK call made while the twin runs: checks that may refuse the call as
AWS would, before moto sees it.

Every boto3 call - the platform's functions, the CLI, the Step Functions interpreter's service
integrations, the emulated SageMaker jobs and endpoints - goes through
``botocore.client.BaseClient._make_api_call``. Checks (request rules, IAM) are chained on that one
hook so that they compose; a check refuses a call by raising the client's own error (the modeled
exception class when the service has one), with AWS's code, message and HTTP status.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finetune.local.patching import Patch

__all__ = ["ApiCall", "CallCheck", "call_checks_patch", "refusal"]


@dataclass(frozen=True)
class ApiCall:
    """One SDK call: ``service`` is botocore's service name (``s3``, ``sagemaker``, ...)."""

    client: Any
    service: str
    operation: str
    params: dict[str, Any]
    region: str


CallCheck = Callable[[ApiCall], None]


def refusal(call: ApiCall, code: str, message: str, *, status: int = 400) -> Exception:
    """The error AWS returns for ``call``: the client's modeled class for ``code`` if any."""
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())},
    }
    error_class = call.client.exceptions.from_code(code)
    return error_class(response, call.operation)


def call_checks_patch(checks: Sequence[CallCheck]) -> Patch:
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def make_api_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        call = ApiCall(
            client=self,
            service=self.meta.service_model.service_name,
            operation=operation_name,
            params=api_params,
            region=self.meta.region_name,
        )
        for check in checks:
            check(call)
        return original(self, operation_name, api_params)

    return Patch(
        BaseClient,
        "_make_api_call",
        make_api_call,
        "every SDK call passes the twin's request rules and IAM evaluation before reaching moto",
    )
