"""The IAM twin: every call a principal of the platform makes in the emulator is evaluated
against the synthesized policies before moto sees it, and refused as AWS would refuse it.

Who makes a call is known from where it is made (``acting_as``): the state machine's role for
its Tasks, each function's role inside its handler, SageMaker's execution roles for what jobs and
endpoints do, the Studio role for the CLI in tests. Calls made outside any principal (the test
harness, the emulator's own bookkeeping) are not evaluated and are counted as such.

Policies come from the synthesized templates, resolved with the emulator's physical ids: each
role's managed and inline policies, bucket policies, the topic policy and the key policy. The
twin records every decision; ``denials`` lists the refusals, each naming principal, action and
resource, and ``coverage`` how many calls were evaluated per principal.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune.local.call_hook import ApiCall, refusal
from finetune.local.iam.actions import authorizations
from finetune.local.iam.on_behalf import endpoint_requests, training_job_requests
from finetune.local.iam.policy import AccessRequest, Principal, evaluate

__all__ = ["Denial", "IamTwin"]

#: The error code each service answers a refused call with (and its HTTP status).
_DENIED = {
    "s3": ("AccessDenied", 403),
    "sns": ("AuthorizationError", 403),
    "cloudformation": ("AccessDenied", 403),
    "lambda": ("AccessDeniedException", 403),
}


@dataclass(frozen=True)
class Denial:
    principal: str
    action: str
    resource: str
    reason: str
    call: str

    def __str__(self) -> str:
        return (
            f"{self.principal} is not authorized to perform {self.action} on {self.resource} "
            f"({self.call}): {self.reason}"
        )


@dataclass
class _Policies:
    """What the templates grant, by role ARN and by resource."""

    account: str = "123456789012"
    region: str = "us-east-1"
    partition: str = "aws"
    roles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bucket_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    topic_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    bucket_keys: dict[str, str] = field(default_factory=dict)
    topic_keys: dict[str, str] = field(default_factory=dict)
    alarms: dict[str, list[str]] = field(default_factory=dict)  # alarm ARN -> action ARNs
    vpc_arn: str | None = None
    mlflow_artifact_store: str | None = None


class IamTwin:
    """Principals (see moto_patches) that evaluate IAM. Call ``load`` once the emulated platform
    exists (its physical ids resolve the policies)."""

    def __init__(self) -> None:
        self._principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "principal", default=None
        )
        self.policies = _Policies()
        self.loaded = False
        self.denials: list[Denial] = []
        self.evaluated: Counter[tuple[str, str]] = Counter()
        self.not_evaluated: Counter[str] = Counter()

    # -- platform ------------------------------------------------------------------------

    def load(self, intrinsics: Any) -> None:
        """Read every principal's policies and every resource policy from the templates."""
        from finetune.local.iam.templates import read_policies

        self.policies = read_policies(intrinsics)
        self.loaded = True

    # -- Principals protocol -------------------------------------------------------------

    @contextlib.contextmanager
    def acting_as(self, principal_arn: str | None) -> Iterator[None]:
        token = self._principal.set(principal_arn)
        try:
            yield
        finally:
            self._principal.reset(token)

    def check(self, call: ApiCall) -> None:
        principal = self._principal.get()
        if principal is None or not self.loaded:
            self.not_evaluated[f"{call.service}:{call.operation}"] += 1
            return
        requests = authorizations(self, call.service, call.operation, call.params)
        for request in requests:
            denial = self._decide(principal, request, f"{call.service}:{call.operation}")
            if denial is not None:
                code, status = _DENIED.get(call.service, ("AccessDeniedException", 400))
                raise refusal(call, code, _message(principal, request), status=status)
        if call.service == "s3" and call.operation in ("GetObject", "HeadObject"):
            self._missing_object_is_forbidden(principal, call)

    def on_training_job(self, parameters: dict[str, Any]) -> list[str]:
        requests = training_job_requests(
            self,
            parameters,
            listing=_list_keys,
            vpc_arn=self.policies.vpc_arn,
            mlflow_artifact_store=self.policies.mlflow_artifact_store,
        )
        return self._on_behalf(parameters["RoleArn"], requests, "training job")

    def on_endpoint(self, model: dict[str, Any], endpoint_config: dict[str, Any]) -> list[str]:
        endpoint = endpoint_config.get("EndpointName", endpoint_config["EndpointConfigName"])
        requests = endpoint_requests(
            self,
            endpoint,
            model,
            endpoint_config,
            listing=_list_keys,
            vpc_arn=self.policies.vpc_arn,
        )
        return self._on_behalf(model["ExecutionRoleArn"], requests, "endpoint")

    def on_sync_task(self, state_machine_role: str, resource: str) -> list[str]:
        """Step Functions waits for a SageMaker job through an EventBridge rule it manages in
        the account, with the state machine's role (Step Functions developer guide, IAM
        policies for the SageMaker integration)."""
        rule = (
            f"arn:{self.partition}:events:{self.region}:{self.account}:rule/"
            "StepFunctionsGetEventsForSageMakerTrainingJobsRule"
        )
        requests = [
            AccessRequest(f"events:{action}", rule, {"events:ManagedBy": "states.amazonaws.com"})
            for action in ("PutTargets", "PutRule", "DescribeRule")
        ]
        return self._on_behalf(state_machine_role, requests, f"{resource} (.sync)")

    def service_deliveries(self) -> list[Denial]:
        """Alarms publish to their topics as cloudwatch.amazonaws.com: the topic policy and the
        topic's key policy must allow it (identity policies do not apply to services)."""
        found = []
        for alarm, actions in self.policies.alarms.items():
            principal = Principal(service="cloudwatch.amazonaws.com", account=self.account)
            context = {"aws:SourceArn": alarm, "aws:SourceAccount": self.account}
            for action in actions:
                requests = [AccessRequest("sns:Publish", action, context)]
                key = self.policies.topic_keys.get(action)
                if key is not None:
                    requests += [
                        AccessRequest("kms:GenerateDataKey", key, context),
                        AccessRequest("kms:Decrypt", key, context),
                    ]
                for request in requests:
                    denial = self._decide_as(principal, request, "alarm action")
                    if denial is not None:
                        found.append(denial)
        return found

    # -- Env protocol (actions.Env) ------------------------------------------------------

    @property
    def account(self) -> str:
        return self.policies.account

    @property
    def region(self) -> str:
        return self.policies.region

    @property
    def partition(self) -> str:
        return self.policies.partition

    def bucket_key(self, bucket: str) -> str | None:
        return self.policies.bucket_keys.get(bucket)

    def topic_key(self, topic_arn: str) -> str | None:
        return self.policies.topic_keys.get(topic_arn)

    def next_model_package_version(self, group: str) -> int:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sagemaker.models import sagemaker_backends

        backend = sagemaker_backends[DEFAULT_ACCOUNT_ID][self.region]
        versions = [
            p for p in backend.model_packages.values() if p.model_package_group_name == group
        ]
        return len(versions) + 1

    # -- reports -------------------------------------------------------------------------

    def coverage(self) -> dict[str, Counter[str]]:
        """Evaluated authorizations per principal (role name), by action."""
        by_principal: dict[str, Counter[str]] = defaultdict(Counter)
        for (principal, action), count in self.evaluated.items():
            by_principal[principal.rsplit("/", 1)[-1]][action] += count
        return dict(by_principal)

    # -- internals -----------------------------------------------------------------------

    def _on_behalf(self, role_arn: str, requests: list[AccessRequest], what: str) -> list[str]:
        if not self.loaded:
            return []
        denied = []
        for request in requests:
            denial = self._decide(role_arn, request, what)
            if denial is not None:
                denied.append(str(denial))
        return denied

    def _decide(self, principal_arn: str, request: AccessRequest, call: str) -> Denial | None:
        principal = Principal(arn=principal_arn, account=self.account)
        return self._decide_as(principal, request, call)

    def _decide_as(self, principal: Principal, request: AccessRequest, call: str) -> Denial | None:
        is_key = request.action.lower().startswith("kms:")
        decision = evaluate(
            principal,
            request,
            identity_policies=self.policies.roles.get(principal.arn, []),
            resource_policy=self._resource_policy(request),
            key_policy=is_key,
        )
        who = principal.arn or principal.service
        self.evaluated[(who, request.action)] += 1
        if decision.allowed:
            return None
        denial = Denial(who, request.action, request.resource, decision.reason, call)
        self.denials.append(denial)
        return denial

    def _resource_policy(self, request: AccessRequest) -> Mapping[str, Any] | None:
        service = request.action.split(":", 1)[0].lower()
        if service == "s3":
            bucket = request.resource.split(":::", 1)[-1].split("/", 1)[0]
            return self.policies.bucket_policies.get(bucket)
        if service == "sns":
            return self.policies.topic_policies.get(request.resource)
        if service == "kms":
            return self.policies.key_policies.get(request.resource)
        return None

    def _missing_object_is_forbidden(self, principal: str, call: ApiCall) -> None:
        """S3: "If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP status
        code 403 Access Denied error" for a key that does not exist (GetObject, HeadObject).

        AWS does not say which condition context that implicit check carries: the twin offers
        none, so only an unconditioned s3:ListBucket grant turns the 403 into a 404. Code that
        must tell a missing object apart lists the key as a prefix (ListObjectsV2, whose
        s3:prefix is documented) instead of relying on NoSuchKey."""
        bucket, key = call.params["Bucket"], call.params["Key"]
        if _object_exists(bucket, key):
            return
        listing = AccessRequest("s3:ListBucket", f"arn:{self.partition}:s3:::{bucket}", {})
        if self._decide(principal, listing, f"{call.service}:{call.operation}") is not None:
            self.denials.pop()  # not a refusal of its own: the 403 below is the answer
            raise refusal(call, "AccessDenied", "Access Denied", status=403)


def _message(principal: str, request: AccessRequest) -> str:
    role = principal.rsplit("/", 1)[-1]
    account = principal.split(":")[4] if principal.count(":") >= 5 else ""
    return (
        f"User: arn:aws:sts::{account}:assumed-role/{role}/session is not authorized to "
        f"perform: {request.action} on resource: {request.resource} because no "
        f"identity-based policy allows the {request.action} action"
    )


def _list_keys(bucket: str, prefix: str) -> Iterable[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    found = backend.buckets.get(bucket)
    if found is None:
        return []
    return sorted(key for key in found.keys if key.startswith(prefix) and not key.endswith("/"))


def _object_exists(bucket: str, key: str) -> bool:
    return key in set(_list_keys(bucket, key))


def dump(twin: IamTwin) -> str:
    """The decisions, for debugging a denial."""
    return json.dumps([str(d) for d in twin.denials], indent=2)
