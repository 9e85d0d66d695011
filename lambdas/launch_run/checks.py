"""Platform rules a run request must pass before anything starts, one ``field: rule`` each.

The request schema (runspec.request) checks what a request can say on its own; these rules need
the platform's configuration: the instance allow-list, the buckets, egress, and the memory model
for training and for serving.
"""

from __future__ import annotations

from runspec.catalog import UnknownInstanceType, get_instance, resolve_model_shape
from runspec.defaults import training_defaults
from runspec.estimate import check_fit
from runspec.request import S3_URI, RunRequest
from runspec.serving import serving_fit
from runspec.settings import PlatformSettings

__all__ = ["DEFAULT_DATASET_PREFIX", "dataset_uris", "deployment_problems", "validate_for_platform"]

#: Where ``{}`` looks for data: s3://<datasets bucket>/datasets/default/{train,validation}.jsonl
DEFAULT_DATASET_PREFIX = "datasets/default"


def validate_for_platform(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """Problems that only the platform's configuration can reveal."""
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
    problems.extend(deployment_problems(request, settings))
    problems.extend(_data_location_problems(request, settings))
    if request.hyperparameters.trust_remote_code and not settings.allow_trust_remote_code:
        problems.append(
            "hyperparameters.trust_remote_code: this platform does not run code shipped with a "
            "model (it would run with the training role's permissions); use a model that "
            "transformers supports natively, or ask the platform team to set "
            "allow_trust_remote_code in its configuration"
        )
    return problems


def _data_location_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    problems: list[str] = []
    for field, uri in dataset_uris(request, settings):
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
    defaults = training_defaults()
    try:
        shape = resolve_model_shape(request.base_model, request.model_parameters_billions)
    except ValueError as error:
        return [f"model_parameters_billions: {error}"]
    try:
        fit = check_fit(
            instance_type,
            shape,
            method=request.method,
            sequence_length=hp.max_seq_length or defaults.max_seq_length,
            micro_batch_size=hp.per_device_train_batch_size or defaults.per_device_train_batch_size,
            lora_r=hp.lora_r or defaults.lora_r,
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


def deployment_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """A run that asks to be deployed must be servable: a merged model that fits the serving
    instance. Checked at launch, not after hours of training."""
    deployment = request.deployment
    if not deployment.enabled:
        return []
    problems: list[str] = []
    if request.hyperparameters.merge_adapter is False:
        problems.append(
            "hyperparameters.merge_adapter: false writes only the LoRA adapter, which the "
            "serving container would have to combine with the base model downloaded from the "
            "Hub - impossible from a network-isolated endpoint; keep merge_adapter true to "
            "deploy, or disable deployment"
        )
    instance_type = deployment.instance_type or settings.default_endpoint_instance_type
    try:
        spec = get_instance(instance_type, field="deployment.instance_type")
    except UnknownInstanceType as error:
        return [*problems, str(error)]
    if not spec.has_nvidia_gpu:
        return [
            *problems,
            f"deployment.instance_type: {instance_type!r} has no NVIDIA GPU; the Hugging Face "
            "LLM serving container (TGI) needs one (e.g. ml.g5.2xlarge)",
        ]
    try:
        shape = resolve_model_shape(request.base_model, request.model_parameters_billions)
    except ValueError:
        return problems  # reported once, by the training fit check
    sequence = request.hyperparameters.max_seq_length or training_defaults().max_seq_length
    fit = serving_fit(spec, shape, trained_sequence_length=sequence)
    if not fit.fits:
        problems.append(
            f"deployment.instance_type: {fit.reason}, fewer than the 1024 tokens a request "
            "needs; choose an instance with more GPU memory"
        )
    return problems


def dataset_uris(request: RunRequest, settings: PlatformSettings) -> list[tuple[str, str]]:
    """``(field, s3 uri)`` of each channel the run reads."""
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
