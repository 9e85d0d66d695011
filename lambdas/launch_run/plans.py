"""The parts of the run document that describe SageMaker work: the training job and the
deployment, in the shapes the state machine passes to SageMaker unchanged."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from launch_run.base_models import model_channel_source
from runspec.attempts import backoff_schedule
from runspec.catalog import UnknownInstanceType, get_instance, resolve_model_shape
from runspec.defaults import training_defaults
from runspec.naming import deployment_resource_name
from runspec.request import Deployment, RunRequest
from runspec.run import (
    CapacityRetry,
    DeploymentPlan,
    PinnedDataset,
    ResourceConfig,
    TrainingImage,
    TrainingJob,
)
from runspec.serving import serving_environment, serving_fit
from runspec.settings import PlatformSettings
from runspec.setup import DISTRIBUTED_HYPERPARAMETERS, world_size

__all__ = ["dataset_identity", "deployment_plan", "training_plan"]

#: CreateTrainingJob Environment values are at most 512 characters.
_ENVIRONMENT_VALUE_LIMIT = 512


def training_plan(
    request: RunRequest,
    settings: PlatformSettings,
    *,
    run_id: str,
    datasets: dict[str, PinnedDataset],
    image: TrainingImage,
) -> TrainingJob:
    training = request.training
    instance_type = training.instance_type or settings.default_training_instance_type
    hyperparameters = {"model_id": request.base_model}
    hyperparameters.update(request.hyperparameters.as_sagemaker_strings())
    # One process per GPU on every instance, started by torchrun through the toolkit, whenever
    # the job has more than one; the job picks its strategy by the rule the launch check used.
    if world_size(get_instance(instance_type), training.instance_count) > 1:
        hyperparameters.update(DISTRIBUTED_HYPERPARAMETERS)
    if image.option == "script-mode":
        hyperparameters.update(
            {
                "sagemaker_program": "train.py",
                "sagemaker_submit_directory": image.source_s3_uri or "",
                "sagemaker_region": settings.region,
            }
        )
    input_data_config = [_s3_channel(name, dataset.uri) for name, dataset in datasets.items()]
    model_source = model_channel_source(request, settings.region)
    if model_source is not None:
        channel = _s3_channel("model", model_source["S3Uri"])
        channel["DataSource"]["S3DataSource"].update(model_source)
        input_data_config.append(channel)
    stopping_condition: dict[str, int] = {"MaxRuntimeInSeconds": training.max_runtime_seconds}
    if training.max_wait_seconds is not None:
        stopping_condition["MaxWaitTimeInSeconds"] = training.max_wait_seconds
    return TrainingJob(
        image_uri=image.uri,
        instance_type=instance_type,
        instance_count=training.instance_count,
        volume_size_gb=training.volume_size_gb,
        resource_config=ResourceConfig(
            instance_type=instance_type,
            instance_count=training.instance_count,
            volume_size_gb=training.volume_size_gb,
            # NVMe instance storage is encrypted by the hardware and SageMaker refuses a key
            # for it; EBS volumes get the platform key.
            volume_kms_key_id=None
            if _has_instance_storage(instance_type)
            else settings.kms_key_arn,
        ),
        spot=training.spot,
        hyperparameters=hyperparameters,
        input_data_config=input_data_config,
        output_path=f"s3://{settings.artifacts_bucket}/models/{run_id}/",
        checkpoint_s3_uri=f"s3://{settings.artifacts_bucket}/checkpoints/{run_id}/",
        stopping_condition=stopping_condition,
        dataset_identity=dataset_identity(datasets),
        evaluation_config=request.evaluation.job_config(),
        capacity_retry=CapacityRetry(
            max_retries=settings.training_capacity_retries,
            backoff_seconds=backoff_schedule(
                settings.training_capacity_retries, settings.training_capacity_backoff_seconds
            ),
        ),
    )


def dataset_identity(datasets: dict[str, PinnedDataset]) -> str:
    """What the job records as its inputs (FT_DATASET_IDENTITY): per channel its URI, the number
    of pinned objects and a digest of their (key, version, ETag) list; the version id too for a
    single object. Shortened to fit SageMaker's 512-character limit for environment values: the
    run record keeps every pinned object."""
    identity: dict[str, dict[str, Any]] = {}
    for name, dataset in datasets.items():
        pinned = json.dumps(
            [o.model_dump(include={"key", "version_id", "etag"}) for o in dataset.objects],
            sort_keys=True,
        )
        entry: dict[str, Any] = {
            "uri": dataset.uri,
            "objects": len(dataset.objects),
            "sha256": hashlib.sha256(pinned.encode()).hexdigest()[:16],
        }
        if len(dataset.objects) == 1 and dataset.objects[0].version_id:
            entry["version_id"] = dataset.objects[0].version_id
        identity[name] = entry
    text = _compact(identity)
    for optional in ("version_id", "uri"):
        if len(text) <= _ENVIRONMENT_VALUE_LIMIT:
            break
        for entry in identity.values():
            entry.pop(optional, None)
        text = _compact(identity)
    return text


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def deployment_plan(
    deployment: Deployment,
    request: RunRequest,
    settings: PlatformSettings,
    *,
    run_id: str,
    execution_name: str,
    approved: bool,
) -> DeploymentPlan:
    """Names, instance, serving environment and wait bounds of one deployment of the run."""
    instance_type = deployment.instance_type or settings.default_endpoint_instance_type
    names = deployment_resource_name(settings.prefix, run_id, execution_name)
    return DeploymentPlan(
        enabled=deployment.enabled,
        approved=approved,
        endpoint_name=f"{settings.prefix}-{deployment.endpoint_name or request.experiment_name}",
        model_name=names,
        endpoint_config_name=names,
        instance_type=instance_type,
        initial_instance_count=deployment.initial_instance_count,
        serving_environment=_serving_environment(request, instance_type),
        poll_seconds=settings.endpoint_poll_seconds,
        max_polls=settings.endpoint_max_polls,
    )


def _serving_environment(request: RunRequest, instance_type: str) -> dict[str, str]:
    """The serving container's settings for this model on this instance. A deployment that is
    not enabled still gets them: the model package records how the model is served."""
    try:
        spec = get_instance(instance_type)
        shape = resolve_model_shape(request.base_model, request.model_parameters_billions)
    except (UnknownInstanceType, ValueError):
        # Only reachable when deployment is off (launch refuses these when it is on).
        return serving_environment(None, gpus=1)
    sequence = request.hyperparameters.max_seq_length or training_defaults().max_seq_length
    fit = serving_fit(spec, shape, trained_sequence_length=sequence)
    return serving_environment(fit, gpus=spec.gpus)


def _has_instance_storage(instance_type: str) -> bool:
    try:
        return get_instance(instance_type).instance_storage
    except UnknownInstanceType:
        # The allow-list check refuses uncatalogued types before a plan is built.
        return False


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "ContentType": "application/jsonlines" if name != "model" else "application/x-directory",
        "InputMode": "File",
    }
