"""Validate a run request against the platform, pin what it will train on, and describe the run.

Plain functions over typed arguments; AWS clients are passed in (the handler creates them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from runspec.catalog import UnknownInstanceType, get_instance, resolve_model_shape
from runspec.estimate import check_fit
from runspec.naming import derive_run_id, run_id_for_execution, sagemaker_experiment_name
from runspec.request import (
    S3_URI,
    Deployment,
    DeployRequest,
    RunRequest,
    RunRequestError,
    is_deploy_request,
    parse_deploy_request,
    parse_run_request,
)
from runspec.settings import PlatformSettings

__all__ = [
    "DEFAULT_DATASET_PREFIX",
    "deployment_section",
    "resolve_deployment",
    "resolve_run",
    "start_run",
    "validate_for_platform",
]

#: Where ``{}`` looks for data: s3://<datasets bucket>/datasets/default/{train,validation}.jsonl
DEFAULT_DATASET_PREFIX = "datasets/default"
#: A prefix channel may hold at most this many objects: each is pinned and recorded.
MAX_OBJECTS_PER_CHANNEL = 1000
#: Training defaults the memory check assumes when the request leaves them unset; they mirror
#: training_code's defaults.
_TRAINING_DEFAULTS = {"max_seq_length": 1024, "per_device_train_batch_size": 4, "lora_r": 16}


@dataclass(frozen=True)
class _Channel:
    name: str
    uri: str
    bucket: str
    key: str


def validate_for_platform(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """Problems that only the platform's configuration can reveal, one ``field: rule`` each."""
    problems: list[str] = []
    instance_type = request.training.instance_type or settings.default_training_instance_type
    if instance_type not in settings.allowed_training_instance_types:
        problems.append(
            f"training.instance_type: {instance_type!r} is not allowed on this platform; "
            f"allowed: {', '.join(settings.allowed_training_instance_types)}"
        )
    else:
        problems.extend(_fit_problems(request, instance_type, settings.region))
    if request.training.instance_count > 1:
        problems.append(
            f"training.instance_count: {request.training.instance_count} instances are not "
            "supported: the training code runs one process per job with the model spread over "
            "the instance's GPUs; use one instance with more GPUs (e.g. ml.g5.12xlarge)"
        )
    problems.extend(_deployment_problems(request, settings))
    for field, uri in _dataset_uris(request, settings):
        bucket = S3_URI.match(uri).group("bucket")  # type: ignore[union-attr]
        if bucket != settings.datasets_bucket:
            problems.append(
                f"{field}: {uri!r} is outside the platform's datasets bucket "
                f"{settings.datasets_bucket!r} (training jobs may read only that bucket)"
            )
    if request.base_model.startswith("s3://"):
        bucket = S3_URI.match(request.base_model).group("bucket")  # type: ignore[union-attr]
        if bucket != settings.datasets_bucket:
            problems.append(
                f"base_model: {request.base_model!r} is outside the platform's datasets bucket "
                f"{settings.datasets_bucket!r}; stage the model folder there"
            )
    elif not settings.internet_egress:
        problems.append(
            f"base_model: {request.base_model!r} is a Hugging Face Hub id, but this platform has "
            "no internet egress; stage the model in the datasets bucket and give its s3:// folder"
        )
    if request.training.option == "script-mode" and not settings.internet_egress:
        problems.append(
            "training.option: 'script-mode' installs training_code/requirements.txt when the job "
            "starts and needs internet egress, which this platform has off; use 'custom-image'"
        )
    return problems


def _fit_problems(request: RunRequest, instance_type: str, region: str) -> list[str]:
    hp = request.hyperparameters
    try:
        shape = resolve_model_shape(request.base_model, request.model_parameters_billions)
    except ValueError as error:
        return [f"model_parameters_billions: {error}"]
    try:
        fit = check_fit(
            instance_type,
            shape,
            method=request.method,
            sequence_length=hp.max_seq_length or _TRAINING_DEFAULTS["max_seq_length"],
            micro_batch_size=hp.per_device_train_batch_size
            or _TRAINING_DEFAULTS["per_device_train_batch_size"],
            lora_r=hp.lora_r or _TRAINING_DEFAULTS["lora_r"],
            gradient_checkpointing=(
                None
                if hp.gradient_checkpointing in (None, "auto")
                else bool(hp.gradient_checkpointing)
            ),
            instance_count=request.training.instance_count,
            region=region,
            # The training code runs one process per instance with the model's layers spread
            # over the instance's GPUs (device_map="auto").
            multi_gpu="layer_split",
        )
    except UnknownInstanceType as error:
        return [str(error)]
    return [] if fit.fits else [_in_request_terms(fit.message)]


#: The memory model speaks of training knobs; a request names them by their fields.
_REQUEST_TERMS = (
    ("method lora/qlora", "hyperparameters.method 'lora' or 'qlora'"),
    ("method qlora", "hyperparameters.method 'qlora'"),
    (
        "micro_batch_size 1 (raise gradient_accumulation_steps)",
        "hyperparameters.per_device_train_batch_size 1 "
        "(raise hyperparameters.gradient_accumulation_steps)",
    ),
    ("gradient_checkpointing on", "hyperparameters.gradient_checkpointing true"),
    ("a shorter sequence_length", "a shorter hyperparameters.max_seq_length"),
)


def _in_request_terms(message: str) -> str:
    for term, field in _REQUEST_TERMS:
        message = message.replace(term, field)
    return message


def _deployment_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    deployment = request.deployment
    if not deployment.enabled:
        return []
    instance_type = deployment.instance_type or settings.default_endpoint_instance_type
    try:
        spec = get_instance(instance_type, field="deployment.instance_type")
    except UnknownInstanceType as error:
        return [str(error)]
    if not spec.has_nvidia_gpu:
        return [
            f"deployment.instance_type: {instance_type!r} has no NVIDIA GPU; the Hugging Face "
            "LLM serving container (TGI) needs one (e.g. ml.g5.2xlarge)"
        ]
    return []


def _dataset_uris(request: RunRequest, settings: PlatformSettings) -> list[tuple[str, str]]:
    if request.dataset is None:
        base = f"s3://{settings.datasets_bucket}/{DEFAULT_DATASET_PREFIX}"
        return [
            ("dataset.train", f"{base}/train.jsonl"),
            ("dataset.validation", f"{base}/validation.jsonl"),
        ]
    uris = [("dataset.train", request.dataset.train)]
    if request.dataset.validation:
        uris.append(("dataset.validation", request.dataset.validation))
    return uris


def _channels(request: RunRequest, settings: PlatformSettings) -> list[_Channel]:
    channels = []
    for field, uri in _dataset_uris(request, settings):
        match = S3_URI.match(uri)
        assert match is not None  # validated by the schema
        name = field.split(".")[1]
        channels.append(_Channel(name, uri, match.group("bucket"), match.group("key")))
    return channels


def pin_channel(s3: Any, channel: _Channel, *, field: str) -> dict[str, Any]:
    """The exact object versions a channel holds now: key, version id, ETag and size of each."""
    if channel.key.endswith("/"):
        objects = []
        paginator = s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=channel.bucket, Prefix=channel.key):
            for version in page.get("Versions", []):
                if version["IsLatest"] and not version["Key"].endswith("/"):
                    objects.append(
                        {
                            "key": version["Key"],
                            "version_id": version.get("VersionId"),
                            "etag": version["ETag"].strip('"'),
                            "size": version["Size"],
                        }
                    )
                if len(objects) > MAX_OBJECTS_PER_CHANNEL:
                    raise RunRequestError(
                        [
                            f"{field}: {channel.uri!r} holds more than "
                            f"{MAX_OBJECTS_PER_CHANNEL} objects"
                        ]
                    )
        if not objects:
            raise RunRequestError([f"{field}: {channel.uri!r} holds no objects"])
    else:
        try:
            head = s3.head_object(Bucket=channel.bucket, Key=channel.key)
        except s3.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise RunRequestError([f"{field}: {channel.uri!r} does not exist"]) from None
            raise
        if head["ContentLength"] == 0:
            raise RunRequestError([f"{field}: {channel.uri!r} is empty"])
        objects = [
            {
                "key": channel.key,
                "version_id": head.get("VersionId"),
                "etag": head["ETag"].strip('"'),
                "size": head["ContentLength"],
            }
        ]
    return {"uri": channel.uri, "objects": objects}


def resolve_image(request: RunRequest, settings: PlatformSettings, ecr: Any) -> dict[str, Any]:
    """The image the job runs, pinned by digest for the custom image."""
    if request.training.option == "script-mode":
        return {
            "option": "script-mode",
            "uri": settings.script_mode_image_uri,
            "digest": None,
            "source_s3_uri": settings.script_source_s3_uri,
        }
    repository_uri, _, tag = settings.custom_image_uri.rpartition(":")
    repository = repository_uri.split("/", 1)[1]
    response = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    digest = response["imageDetails"][0]["imageDigest"]
    return {
        "option": "custom-image",
        "uri": f"{repository_uri}@{digest}",
        "digest": digest,
        "tag": tag,
        "source_s3_uri": None,
    }


def resolve_run(
    payload: object,
    settings: PlatformSettings,
    *,
    execution_name: str | None,
    s3: Any,
    ecr: Any,
) -> dict[str, Any]:
    """Everything the workflow needs to run ``payload``: validated request with defaults,
    run id, pinned dataset versions, pinned image, training job parameters, gate, registration
    and deployment settings. Raises RunRequestError naming each bad field."""
    request = parse_run_request(payload)
    problems = validate_for_platform(request, settings)
    if problems:
        raise RunRequestError(problems)
    run_id = run_id_for_execution(request, execution_name)
    resource_name = f"{settings.prefix}-{run_id}"

    datasets: dict[str, Any] = {}
    for channel in _channels(request, settings):
        try:
            datasets[channel.name] = pin_channel(s3, channel, field=f"dataset.{channel.name}")
        except RunRequestError:
            # The default location's validation file is optional: training then splits off a
            # validation share of the training data.
            if request.dataset is None and channel.name == "validation":
                continue
            raise
    image = resolve_image(request, settings, ecr)

    hyperparameters = {"model_id": request.base_model}
    hyperparameters.update(request.hyperparameters.as_sagemaker_strings())
    if image["option"] == "script-mode":
        hyperparameters.update(
            {
                "sagemaker_program": "train.py",
                "sagemaker_submit_directory": image["source_s3_uri"],
                "sagemaker_region": settings.region,
            }
        )
    input_data_config = [_s3_channel(name, dataset["uri"]) for name, dataset in datasets.items()]
    if request.base_model.startswith("s3://"):
        input_data_config.append(_s3_channel("model", request.base_model))

    training = request.training
    stopping_condition: dict[str, int] = {"MaxRuntimeInSeconds": training.max_runtime_seconds}
    if training.max_wait_seconds is not None:
        stopping_condition["MaxWaitTimeInSeconds"] = training.max_wait_seconds
    tags = [{"Key": "ft:run-id", "Value": run_id}] + [
        {"Key": key, "Value": value} for key, value in sorted(request.tags.items())
    ]
    dataset_identity = {
        name: {
            "uri": dataset["uri"],
            "objects": [
                {k: obj[k] for k in ("key", "version_id", "etag")} for obj in dataset["objects"]
            ],
        }
        for name, dataset in datasets.items()
    }
    return {
        "mode": "train",
        "run_id": run_id,
        "execution_name": execution_name,
        "experiment_name": sagemaker_experiment_name(settings.prefix, request.experiment_name),
        "trial_name": resource_name,
        "training_job_name": resource_name,
        "request": request.model_dump(mode="json"),
        "base_model": request.base_model,
        "datasets": datasets,
        "image": image,
        "training": {
            "image_uri": image["uri"],
            "instance_type": training.instance_type or settings.default_training_instance_type,
            "instance_count": training.instance_count,
            "volume_size_gb": training.volume_size_gb,
            "spot": training.spot,
            "hyperparameters": hyperparameters,
            "input_data_config": input_data_config,
            "output_path": f"s3://{settings.artifacts_bucket}/models/{run_id}/",
            "checkpoint_s3_uri": f"s3://{settings.artifacts_bucket}/checkpoints/{run_id}/",
            "stopping_condition": stopping_condition,
            "dataset_identity": json.dumps(dataset_identity, separators=(",", ":")),
        },
        "evaluation": request.evaluation.model_dump(mode="json"),
        "registration": {
            "model_package_group": settings.model_package_group,
            "approval_status": settings.model_approval_status,
        },
        "deployment": deployment_section(
            request.deployment,
            experiment_name=request.experiment_name,
            resource_name=resource_name,
            approved=settings.model_approval_status == "Approved",
            settings=settings,
        ),
        "tags": tags,
    }


def deployment_section(
    deployment: Deployment,
    *,
    experiment_name: str,
    resource_name: str,
    approved: bool,
    settings: PlatformSettings,
) -> dict[str, Any]:
    """What the workflow's deploy steps need: names, instance, and the wait loop's bounds."""
    instance_type = deployment.instance_type or settings.default_endpoint_instance_type
    return {
        "enabled": deployment.enabled,
        "approved": approved,
        "endpoint_name": f"{settings.prefix}-{deployment.endpoint_name or experiment_name}",
        "model_name": resource_name,
        "endpoint_config_name": resource_name,
        "instance_type": instance_type,
        "initial_instance_count": deployment.initial_instance_count,
        # TGI shards the model over the instance's GPUs (SM_NUM_GPUS).
        "gpus_per_instance": _gpus(instance_type),
        "poll_seconds": settings.endpoint_poll_seconds,
        "max_polls": settings.endpoint_max_polls,
    }


def resolve_deployment(
    payload: object, settings: PlatformSettings, *, s3: Any, sagemaker: Any
) -> dict[str, Any]:
    """The run document for deploying an earlier run's Approved model package."""
    request = parse_deploy_request(payload)
    key = f"runs/{request.deploy_run}/run.json"
    try:
        record = json.loads(s3.get_object(Bucket=settings.artifacts_bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        raise RunRequestError([f"deploy_run: no run {request.deploy_run!r} is recorded"]) from None
    package_arn = next(
        (m["model_package_arn"] for m in record["milestones"] if m.get("model_package_arn")), None
    )
    if package_arn is None:
        raise RunRequestError(
            [
                f"deploy_run: run {request.deploy_run!r} registered no model "
                f"(status {record['status']})"
            ]
        )
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    if package["ModelApprovalStatus"] != "Approved":
        raise RunRequestError(
            [
                f"deploy_run: the model of run {request.deploy_run!r} is "
                f"{package['ModelApprovalStatus']}; approve it first (finetune promote)"
            ]
        )
    run = dict(record["run"])
    original = parse_run_request(run["request"])
    deployment = request.deployment or original.deployment.model_copy(update={"enabled": True})
    problems = _deployment_problems(
        original.model_copy(update={"deployment": deployment}), settings
    )
    if not deployment.enabled:
        problems.append("deployment.enabled: must be true to deploy")
    if problems:
        raise RunRequestError(problems)
    container = package["InferenceSpecification"]["Containers"][0]
    run.update(
        {
            "mode": "deploy",
            "model_artifacts": container["ModelDataSource"]["S3DataSource"]["S3Uri"],
            "model_package_arn": package_arn,
            "deployment": deployment_section(
                deployment,
                experiment_name=original.experiment_name,
                resource_name=run["training_job_name"],
                approved=True,
                settings=settings,
            ),
        }
    )
    return run


def _gpus(instance_type: str) -> str:
    try:
        return str(max(1, get_instance(instance_type).gpus))
    except UnknownInstanceType:  # only checked when deployment is enabled
        return "1"


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


def start_run(
    payload: object,
    settings: PlatformSettings,
    *,
    sfn: Any,
    s3: Any,
    ecr: Any,
    sagemaker: Any | None = None,
) -> dict[str, Any]:
    """Start the workflow for ``payload`` (a run request, or a deploy request) with the run id
    as the execution name.

    The request is resolved first (nothing starts when it is invalid). Starting the same request
    again returns the existing execution instead of a second run.
    """
    request: RunRequest | DeployRequest
    if is_deploy_request(payload):
        deploy = parse_deploy_request(payload)
        resolve_deployment(payload, settings, s3=s3, sagemaker=sagemaker)
        name = f"{deploy.deploy_run}-deploy-{_short_hash(json.dumps(payload, sort_keys=True))}"
        run_id, request = deploy.deploy_run, deploy
    else:
        request = parse_run_request(payload)
        run_id = name = derive_run_id(request)
        resolve_run(payload, settings, execution_name=run_id, s3=s3, ecr=ecr)
    execution_input = json.dumps(request.model_dump(mode="json", exclude_defaults=True))
    execution_arn = _execution_arn(settings.state_machine_arn, name)
    try:
        started = sfn.start_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=execution_input
        )
        return {"run_id": run_id, "execution_arn": started["executionArn"], "started": True}
    except sfn.exceptions.ExecutionAlreadyExists:
        existing = sfn.describe_execution(executionArn=execution_arn)
        if json.loads(existing["input"]) != json.loads(execution_input):
            raise RunRequestError(
                [
                    f"run_name: run id {run_id!r} is already used by a different request; "
                    "choose another run_name"
                ]
            ) from None
        return {
            "run_id": run_id,
            "execution_arn": existing["executionArn"],
            "started": False,
            "status": existing["status"],
        }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
