"""EventBridge rules that start the workflow, emulated at the delivery boundary.

moto's EventBridge matches events against a rule's pattern, but it delivers to logs, SQS and
event buses only: a Step Functions target raises NotImplementedError, and its input transformer
pastes a string value unquoted into a JSON template. The patch here delivers to Step Functions
as EventBridge does: the rule's own pattern (moto's matcher), the input transformer as
documented ("EventBridge replaces input transformers at runtime to ensure a valid JSON output":
a variable outside quotes becomes a JSON value, inside quotes its text, escaped), and
``StartExecution`` made with the target's role, which the IAM twin evaluates.

``create_event_rules`` puts the synthesized rules on moto's default bus; ``package_state_change``
builds the event SageMaker sends when a model package changes (the documented example's fields).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3

from finetune.local.cfn import Intrinsics
from finetune.local.patching import Patch

if TYPE_CHECKING:
    from finetune.local.moto_patches import Principals

__all__ = [
    "create_event_rules",
    "event_patches",
    "package_state_change",
    "transform_input",
]

_REGION = "us-east-1"

#: The fields of the documented "SageMaker Model Package State Change" detail ("Events that
#: Amazon SageMaker AI sends to Amazon EventBridge", SageMaker AI Developer Guide). The example
#: shows no CustomerMetadataProperties, so the emulated event has none: the platform must not
#: depend on it.
_PACKAGE_DETAIL_FIELDS = (
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "CreationTime",
    "InferenceSpecification",
    "ModelPackageStatus",
    "ModelPackageStatusDetails",
    "CertifyForMarketplace",
    "ModelApprovalStatus",
    "MetadataProperties",
    "ModelMetrics",
    "LastModifiedTime",
)


def package_state_change(package: dict[str, Any]) -> dict[str, Any]:
    """The event SageMaker puts on the default bus for ``package`` (a DescribeModelPackage
    answer) after it was created or its approval changed."""

    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    detail = {key: plain(package[key]) for key in _PACKAGE_DETAIL_FIELDS if key in package}
    return {
        "Source": "aws.sagemaker",
        "DetailType": "SageMaker Model Package State Change",
        "Resources": [package["ModelPackageArn"]],
        "Detail": json.dumps(detail),
    }


def create_event_rules(intrinsics: Intrinsics) -> list[str]:
    """Put every synthesized ``AWS::Events::Rule`` (pattern and targets) on moto's default
    bus; returns the rule names."""
    events = boto3.client("events", region_name=_REGION)
    names = []
    for stack in intrinsics.templates:
        for logical_id in intrinsics.logical_ids(stack, "AWS::Events::Rule"):
            properties = intrinsics.resolve(stack, intrinsics.properties(stack, logical_id))
            name = str(properties.get("Name") or logical_id)
            events.put_rule(
                Name=name,
                EventPattern=json.dumps(properties["EventPattern"]),
                State=properties.get("State", "ENABLED"),
            )
            events.put_targets(
                Rule=name,
                Targets=[_target(target) for target in properties.get("Targets", [])],
            )
            names.append(name)
    return names


def _target(target: dict[str, Any]) -> dict[str, Any]:
    keys = ("Id", "Arn", "RoleArn", "InputTransformer", "Input", "InputPath", "RetryPolicy")
    found = {key: target[key] for key in keys if key in target}
    if "DeadLetterConfig" in target:
        found["DeadLetterConfig"] = target["DeadLetterConfig"]
    return found


_VARIABLE = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def transform_input(transformer: dict[str, Any], event: dict[str, Any]) -> str:
    """What EventBridge sends the target for ``event`` (API reference, InputTransformer: the
    template may be JSON "with variables in quotes or out"; a path the event lacks gives
    null)."""
    values: dict[str, Any] = {}
    for variable, path in (transformer.get("InputPathsMap") or {}).items():
        values[variable] = _at(event, path)
    values["aws.events.event.json"] = event
    template = str(transformer["InputTemplate"])
    out: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        variable = match.group(1)
        if variable not in values:
            continue
        out.append(template[position : match.start()])
        value = values[variable]
        inside_string = _in_string(template, match.start())
        if inside_string:
            text = value if isinstance(value, str) else json.dumps(value)
            out.append(json.dumps("" if value is None else text)[1:-1])
        else:
            out.append(json.dumps(value))
        position = match.end()
    out.append(template[position:])
    return "".join(out)


def _at(document: Any, path: str) -> Any:
    current = document
    for part in path.removeprefix("$").strip(".").split("."):
        if not part:
            continue
        if isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return None
    return current


def _in_string(template: str, index: int) -> bool:
    """Whether ``index`` of the JSON ``template`` lies inside a string literal."""
    inside = False
    escaped = False
    for char in template[:index]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            inside = not inside
    return inside


def event_patches(principals: Principals | None) -> list[Patch]:
    from moto.events.models import Rule

    original: Callable[..., None] = Rule.send_to_targets

    def send_to_targets(self: Rule, original_event: Any, transform_input_: bool = True) -> None:
        targets = list(self.targets)
        if not targets or any(":states:" not in str(t["Arn"]) for t in targets):
            original(self, original_event, transform_input_)
            return
        if not self.event_pattern.matches_event(original_event):
            return
        for target in targets:
            _start_execution(target, dict(original_event), principals)

    return [
        Patch(
            Rule,
            "send_to_targets",
            send_to_targets,
            "EventBridge delivers a matching event to a Step Functions target: StartExecution "
            "with the target's role and the input transformer's JSON (string variables quoted)",
        )
    ]


def _start_execution(
    target: dict[str, Any], event: dict[str, Any], principals: Principals | None
) -> None:
    if "InputTransformer" in target:
        payload = transform_input(target["InputTransformer"], event)
    elif "Input" in target:
        payload = str(target["Input"])
    else:
        payload = json.dumps(event)
    sfn = boto3.client("stepfunctions", region_name=_REGION)
    role = target.get("RoleArn")
    acting = principals.acting_as(role) if principals is not None else None
    if acting is None:
        sfn.start_execution(stateMachineArn=target["Arn"], name=str(uuid.uuid4()), input=payload)
        return
    with acting:
        sfn.start_execution(stateMachineArn=target["Arn"], name=str(uuid.uuid4()), input=payload)
