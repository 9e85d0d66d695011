"""SageMaker's request rules that moto does not enforce, each as the API reference states it.

- Names are unique per account and region: CreateTrainingJob refuses an existing job name
  (ResourceInUse; until the job is deleted), CreateModel, CreateEndpointConfig and
  CreateEndpoint refuse an existing name (ValidationException "Cannot create already existing
  ..."). moto silently replaces the existing resource.
  Endpoint names are compared case-insensitively ("The name is case-insensitive in
  CreateEndpoint").
- "You can't request a VolumeKmsKeyId when using an instance type with local storage"
  (CreateTrainingJob ResourceConfig): the instance catalog says which types have NVMe instance
  storage. (CreateEndpointConfig's KmsKeyId is only documented as not encrypting instance
  storage, so the twin accepts it.)
- DeleteEndpoint and UpdateEndpoint are refused while the endpoint is Creating, Updating,
  SystemUpdating or RollingBack ("Cannot update in-progress endpoint"; an endpoint stuck in
  Creating can be deleted only once it has Failed).
- CreateModelPackage: "If you supply ModelPackageGroupName ... you cannot supply a tag
  argument" (a versioned package takes its group's tags).
- Managed spot training needs MaxWaitTimeInSeconds, at least MaxRuntimeInSeconds
  (CreateTrainingJob StoppingCondition).
- Every documented parameter constraint (lengths, patterns, enums, ranges): request_shapes.
"""

from __future__ import annotations

from finetune.local.call_hook import ApiCall, refusal

__all__ = ["check_endpoint_not_in_transition", "check_sagemaker_request", "check_unique_name"]


def check_sagemaker_request(call: ApiCall) -> None:
    if call.service != "sagemaker":
        return
    params = call.params
    if call.operation == "CreateTrainingJob":
        resources = params.get("ResourceConfig") or {}
        if resources.get("VolumeKmsKeyId") and _has_instance_storage(resources.get("InstanceType")):
            raise refusal(
                call,
                "ValidationException",
                "You can't request a VolumeKmsKeyId when using an instance type with local "
                f"storage: {resources['InstanceType']} has NVMe instance storage, which is "
                "encrypted by the hardware.",
            )
        stopping = params.get("StoppingCondition") or {}
        if params.get("EnableManagedSpotTraining"):
            wait = stopping.get("MaxWaitTimeInSeconds")
            if wait is None or wait < stopping.get("MaxRuntimeInSeconds", 86400):
                raise refusal(
                    call,
                    "ValidationException",
                    "MaxWaitTimeInSeconds must be present and at least MaxRuntimeInSeconds for "
                    "managed spot training.",
                )
    elif (
        call.operation == "CreateModelPackage"
        and params.get("ModelPackageGroupName")
        and params.get("Tags")
    ):
        raise refusal(
            call,
            "ValidationException",
            "Tags cannot be supplied with ModelPackageGroupName: a versioned model package "
            "uses the tags of its model package group.",
        )


def _has_instance_storage(instance_type: str | None) -> bool:
    from runspec.catalog import UnknownInstanceType, get_instance

    if not instance_type:
        return False
    try:
        return get_instance(instance_type).instance_storage
    except UnknownInstanceType:
        return False


_EXISTING = {
    # operation: (request field, backend registry, error code, message)
    "CreateTrainingJob": (
        "TrainingJobName",
        "training_jobs",
        "ResourceInUse",
        "Training job names must be unique within an AWS account and region, and a training "
        "job with this name already exists ({arn})",
    ),
    "CreateModel": (
        "ModelName",
        "_models",
        "ValidationException",
        'Cannot create already existing model "{arn}".',
    ),
    "CreateEndpointConfig": (
        "EndpointConfigName",
        "endpoint_configs",
        "ValidationException",
        'Cannot create already existing endpoint configuration "{arn}".',
    ),
    "CreateEndpoint": (
        "EndpointName",
        "endpoints",
        "ValidationException",
        'Cannot create already existing endpoint "{arn}".',
    ),
}
_ARN_KIND = {
    "CreateTrainingJob": "training-job",
    "CreateModel": "model",
    "CreateEndpointConfig": "endpoint-config",
    "CreateEndpoint": "endpoint",
}


def check_unique_name(call: ApiCall) -> None:
    """Names are unique per account and region (moto silently replaces the existing resource).
    A training job name is taken until the job is deleted (DeleteTrainingJob)."""
    if call.service != "sagemaker" or call.operation not in _EXISTING:
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    field, registry, code, message = _EXISTING[call.operation]
    name = call.params.get(field)
    backend = sagemaker_backends[DEFAULT_ACCOUNT_ID][call.region]
    existing = getattr(backend, registry)
    if call.operation == "CreateEndpoint" and isinstance(name, str):
        match = next((known for known in existing if known.lower() == name.lower()), None)
        name = match if match is not None else name
    if name in existing:
        kind = _ARN_KIND[call.operation]
        arn = f"arn:aws:sagemaker:{call.region}:{DEFAULT_ACCOUNT_ID}:{kind}/{name}"
        raise refusal(call, code, message.format(arn=arn))


_IN_TRANSITION = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def check_endpoint_not_in_transition(call: ApiCall) -> None:
    if call.service != "sagemaker" or call.operation not in ("DeleteEndpoint", "UpdateEndpoint"):
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    name = call.params.get("EndpointName")
    endpoint = sagemaker_backends[DEFAULT_ACCOUNT_ID][call.region].endpoints.get(name)
    if endpoint is not None and endpoint.endpoint_status in _IN_TRANSITION:
        verb = "delete" if call.operation == "DeleteEndpoint" else "update"
        raise refusal(
            call,
            "ValidationException",
            f'Cannot {verb} in-progress endpoint "{endpoint.arn}".',
        )
