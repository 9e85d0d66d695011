"""Resolve an undeploy request: which platform endpoint, which run it serves, what it costs.

``{"undeploy": "<endpoint or run id>"}`` names an endpoint (``<prefix>-<name>`` or ``<name>``)
or a run (the endpoint it was last deployed to). ``{"idle_alarm": "<alarm>"}`` is what the
platform's idle rule starts when an endpoint's idle alarm fires: the alarm must be one the
workflow created for a platform endpoint (``<endpoint>-idle`` on the endpoint's Invocations) and
still be in ALARM, so that a late or repeated event never deletes an endpoint that is busy again.

The endpoint must belong to the platform (named ``<prefix>-...``) and serve a run of it: its
endpoint config carries the run's ``ft:run-id`` tag (the workflow tags every config it creates).
The model, endpoint config and model package stay; ``finetune deploy RUN`` serves the run again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from runspec.endpoints import (
    RUN_ID_TAG,
    endpoint_alarm_names,
    idle_alarm_name,
    scaling_resource_id,
    usd_per_hour,
)
from runspec.objects import read_json_if_exists
from runspec.request import RunRequestError, UndeployRequest, parse_undeploy_request
from runspec.run import RunDocument, UndeployPlan
from runspec.settings import PlatformSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient

__all__ = [
    "resolve_undeploy",
    "undeploy_count",
    "undeploy_execution_name",
    "undeploy_plan",
]


def resolve_undeploy(
    payload: object,
    settings: PlatformSettings,
    *,
    s3: S3Client,
    sagemaker: SageMakerClient,
    cloudwatch: Any | None = None,
    execution_name: str | None = None,
) -> RunDocument:
    """The run document of an undeploy execution: the run the endpoint serves, as recorded,
    with ``mode: undeploy`` and the plan. Raises RunRequestError saying what is wrong."""
    request = parse_undeploy_request(payload)
    plan = undeploy_plan(request, settings, s3=s3, sagemaker=sagemaker, cloudwatch=cloudwatch)
    record = read_json_if_exists(s3, settings.artifacts_bucket, f"runs/{plan.run_id}/run.json")
    if record is None:
        raise RunRequestError(
            [
                f"undeploy: endpoint {plan.endpoint_name} serves run {plan.run_id!r}, which is "
                "not recorded"
            ]
        )
    run = RunDocument.model_validate(record["run"])
    return run.model_copy(
        update={"mode": "undeploy", "undeploy": plan, "execution_name": execution_name}
    )


def undeploy_plan(
    request: UndeployRequest,
    settings: PlatformSettings,
    *,
    s3: S3Client,
    sagemaker: SageMakerClient,
    cloudwatch: Any | None,
) -> UndeployPlan:
    trigger: Literal["request", "idle"]
    if request.idle_alarm is not None:
        if cloudwatch is None:
            raise RunRequestError(["idle_alarm: only the platform's idle rule starts these"])
        endpoint_name, idle_for = _idle_endpoint(request.idle_alarm, settings, cloudwatch)
        trigger, requested_by = "idle", f"idle alarm {request.idle_alarm}"
        reason = request.reason or f"no invocations for {idle_for}"
    else:
        assert request.undeploy is not None
        endpoint_name = _endpoint_of(request.undeploy, settings, s3=s3, sagemaker=sagemaker)
        trigger, requested_by = "request", request.requested_by or "unknown (not given)"
        reason = request.reason or "requested"
    endpoint = _describe_endpoint(sagemaker, endpoint_name)
    if endpoint is None:
        raise RunRequestError([f"undeploy: there is no endpoint {endpoint_name}"])
    config_name = str(endpoint["EndpointConfigName"])
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    tags = sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
    run_id = next((t["Value"] for t in tags if t["Key"] == RUN_ID_TAG), None)
    if run_id is None:
        raise RunRequestError(
            [
                f"undeploy: endpoint {endpoint_name} serves {config_name}, which no platform run "
                f"created (no {RUN_ID_TAG} tag); delete it yourself if it is yours"
            ]
        )
    variants = endpoint.get("ProductionVariants") or [{}]
    listed: list[Any] = list(config.get("ProductionVariants") or [])
    configured: dict[str, Any] = dict(listed[0]) if listed else {}
    instance_type = configured.get("InstanceType")
    count = int(
        variants[0].get("CurrentInstanceCount") or configured.get("InitialInstanceCount") or 0
    )
    return UndeployPlan(
        endpoint_name=endpoint_name,
        endpoint_config_name=config_name,
        run_id=run_id,
        instance_type=instance_type,
        instance_count=count,
        usd_per_hour=usd_per_hour(instance_type, count, settings.region),
        trigger=trigger,
        requested_by=requested_by,
        reason=reason,
        alarm_names=endpoint_alarm_names(endpoint_name),
        scaling_resource_id=scaling_resource_id(endpoint_name),
        poll_seconds=settings.endpoint_poll_seconds,
        max_polls=settings.endpoint_max_polls,
    )


def undeploy_execution_name(plan: UndeployPlan) -> str:
    """``<run id>-undeploy-<6 hex of endpoint and config>``: one execution per endpoint and the
    config it serves (the same request twice is one undeploy; after a redeploy, a new one).
    At most 80 characters (Step Functions): run ids are at most 64."""
    digest = hashlib.sha256(f"{plan.endpoint_name}/{plan.endpoint_config_name}".encode())
    return f"{plan.run_id}-undeploy-{digest.hexdigest()[:6]}"


def undeploy_count(record: dict[str, Any]) -> int:
    """How many times the run's endpoint was undeployed (its record's endpoint changes)."""
    changes = record.get("endpoint_changes") or []
    return sum(1 for change in changes if change.get("change") == "undeployed")


def _endpoint_of(target: str, settings: PlatformSettings, *, s3: S3Client, sagemaker: Any) -> str:
    """The endpoint ``target`` names: an endpoint of the platform (with or without its prefix),
    else a run id's last endpoint."""
    prefix = f"{settings.prefix}-"
    candidates = [target] if target.startswith(prefix) else [f"{prefix}{target}"]
    for name in candidates:
        if _describe_endpoint(sagemaker, name) is not None:
            return name
    record = read_json_if_exists(s3, settings.artifacts_bucket, f"runs/{target}/run.json")
    if record is not None:
        deployed = [
            str(m["endpoint_name"])
            for m in record.get("milestones", [])
            if m.get("milestone") == "deployed" and m.get("endpoint_name")
        ]
        if deployed:
            return deployed[-1]
        raise RunRequestError([f"undeploy: run {target!r} was never deployed"])
    raise RunRequestError(
        [
            f"undeploy: {target!r} is neither an endpoint of the platform ({candidates[0]}) nor "
            "a recorded run (finetune endpoints lists them)"
        ]
    )


def _describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(sagemaker.describe_endpoint(EndpointName=name))
    except ClientError as error:
        # DescribeEndpoint reports a missing endpoint as ValidationException "Could not find".
        if "Could not find endpoint" in str(error.response["Error"].get("Message", "")):
            return None
        raise


def _idle_endpoint(alarm_name: str, settings: PlatformSettings, cloudwatch: Any) -> tuple[str, str]:
    """The endpoint whose idle alarm ``alarm_name`` is, and how long it has been idle; refused
    unless the alarm is a platform idle alarm that is still in ALARM."""
    alarms = cloudwatch.describe_alarms(AlarmNames=[alarm_name]).get("MetricAlarms", [])
    if not alarms:
        raise RunRequestError([f"idle_alarm: there is no alarm {alarm_name}"])
    alarm = alarms[0]
    dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
    endpoint = dimensions.get("EndpointName", "")
    if (
        alarm.get("Namespace") != "AWS/SageMaker"
        or alarm.get("MetricName") != "Invocations"
        or not endpoint.startswith(f"{settings.prefix}-")
        or alarm_name != idle_alarm_name(endpoint)
    ):
        raise RunRequestError(
            [f"idle_alarm: {alarm_name} is not the idle alarm of a platform endpoint"]
        )
    if alarm.get("StateValue") != "ALARM":
        raise RunRequestError(
            [
                f"idle_alarm: {alarm_name} is {alarm.get('StateValue')} now (the endpoint was "
                "invoked again): nothing undeployed"
            ]
        )
    minutes = int(alarm.get("Period", 60)) * int(alarm.get("EvaluationPeriods", 1)) // 60
    return endpoint, f"{minutes} minutes"
