"""SageMaker's request rules that moto does not enforce, each as the API reference states it.

- Names are unique per account and region: CreateTrainingJob refuses an existing job name
  (ResourceInUse; until the job is deleted), CreateModel, CreateEndpointConfig and
  CreateEndpoint refuse an existing name (ValidationException "Cannot create already existing
  ..."). moto silently replaces the existing resource.
- "You can't request a VolumeKmsKeyId when using an instance type with local storage"
  (CreateTrainingJob ResourceConfig; the same rule for CreateEndpointConfig KmsKeyId): the
  instance catalog says which types have NVMe instance storage.
- Managed spot training needs MaxWaitTimeInSeconds, at least MaxRuntimeInSeconds
  (CreateTrainingJob StoppingCondition).
- Every documented parameter constraint (lengths, patterns, enums, ranges): request_shapes.
"""

from __future__ import annotations

from finetune.local.call_hook import ApiCall, refusal

__all__ = ["check_sagemaker_request", "check_unique_name"]


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
    elif call.operation == "CreateEndpointConfig" and params.get("KmsKeyId"):
        for variant in params.get("ProductionVariants", []):
            if _has_instance_storage(variant.get("InstanceType")):
                raise refusal(
                    call,
                    "ValidationException",
                    f"KmsKeyId is not supported for instance type {variant['InstanceType']}: "
                    "its storage volume is NVMe instance storage.",
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
    if name in getattr(backend, registry):
        kind = _ARN_KIND[call.operation]
        arn = f"arn:aws:sagemaker:{call.region}:{DEFAULT_ACCOUNT_ID}:{kind}/{name}"
        raise refusal(call, code, message.format(arn=arn))
