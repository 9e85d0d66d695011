"""Platform rules a run request must pass before anything starts, one ``field: rule`` each.

The request schema (runspec.request) checks what a request can say on its own; these rules need
the platform's configuration: the instance allow-list and most instances per job, the buckets,
egress, and the memory model for training and for serving. The training setup is built once
from the request (runspec.setup); the estimator's suggestions are worded here in request fields.
"""

from __future__ import annotations

from launch_run.base_models import base_model_problems
from runspec.catalog import UnknownInstanceType, get_instance
from runspec.estimate import Suggestion, check_fit
from runspec.request import S3_URI, RunRequest
from runspec.serving import serving_fit
from runspec.settings import PlatformSettings
from runspec.setup import REQUEST_FIELDS, PlatformLimits, SetupError, TrainingSetup

__all__ = [
    "CHANNEL_FIELDS",
    "DEFAULT_DATASET_PREFIX",
    "channel_field",
    "dataset_uris",
    "deployment_problems",
    "validate_for_platform",
]

#: Where ``{}`` looks for data: s3://<datasets bucket>/datasets/default/{train,validation}.jsonl
DEFAULT_DATASET_PREFIX = "datasets/default"
#: The request field each data channel of the training job comes from: every refusal about a
#: channel names the field the user wrote (the test set is the job's ``test`` channel).
CHANNEL_FIELDS = {
    "train": "dataset.train",
    "validation": "dataset.validation",
    "test": "evaluation.dataset",
}


def channel_field(channel: str) -> str:
    """The request field of a data channel (``test`` -> ``evaluation.dataset``)."""
    return CHANNEL_FIELDS[channel]


def validate_for_platform(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """Problems that only the platform's configuration can reveal."""
    problems: list[str] = []
    setup: TrainingSetup | None = None
    try:
        setup = TrainingSetup.from_request(request, PlatformLimits.from_settings(settings))
    except SetupError as error:
        problems.extend(error.problems)
    else:
        problems.extend(setup.limit_problems() or _fit_problems(setup))
    problems.extend(deployment_problems(request, settings, setup))
    problems.extend(_data_location_problems(request, settings))
    if request.hyperparameters.trust_remote_code and not settings.allow_trust_remote_code:
        problems.append(
            "hyperparameters.trust_remote_code: this platform does not run code shipped with a "
            "model (it would run with the training role's permissions); use a model that "
            "transformers supports natively, or ask the platform team to set "
            "allow_trust_remote_code in its configuration"
        )
    problems.extend(_judge_problems(request, settings))
    return problems


def _judge_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """The training role may invoke only the Bedrock models of the platform's judge_model_ids
    (stacks.components.sagemaker_roles): any other judge would fail in the job, after training."""
    judge = request.evaluation.judge
    if judge is None or judge.model_id in settings.judge_model_ids:
        return []
    allowed = ", ".join(settings.judge_model_ids) or "none"
    return [
        f"evaluation.judge.model_id: {judge.model_id!r} is not a judge model this platform "
        f"allows (it allows {allowed}); the training role may invoke only the Bedrock models "
        "listed in judge_model_ids of the platform's configuration: "
        + ("choose one of them, or " if settings.judge_model_ids else "")
        + "ask the platform team to add it"
    ]


def _data_location_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    problems: list[str] = []
    for field, uri in dataset_uris(request, settings):
        bucket = S3_URI.match(uri).group("bucket")  # type: ignore[union-attr]
        if bucket != settings.datasets_bucket:
            problems.append(
                f"{field}: {uri!r} is outside the platform's datasets bucket "
                f"{settings.datasets_bucket!r} (training jobs may read only that bucket)"
            )
    problems.extend(base_model_problems(request, settings))
    if request.training.option == "script-mode" and not settings.internet_egress:
        problems.append(
            "training.option: 'script-mode' installs training_code/requirements.txt when the job "
            "starts and needs internet egress, which this platform has off; use 'custom-image'"
        )
    return problems


def _fit_problems(setup: TrainingSetup) -> list[str]:
    fit = check_fit(setup)
    if fit.fits:
        return []
    advice = " or ".join(_in_request_terms(s) for s in fit.suggestions)
    return [
        f"{REQUEST_FIELDS[fit.field]}: {fit.summary}; "
        + (f"use {advice}" if advice else "nothing this platform allows fits it")
    ]


def _in_request_terms(suggestion: Suggestion) -> str:
    """``hyperparameters.per_device_train_batch_size 1 with
    hyperparameters.gradient_accumulation_steps 4``: fields and values as a request writes them."""
    return " with ".join(
        f"{REQUEST_FIELDS[c.field]} "
        + (str(c.value).lower() if isinstance(c.value, bool) else repr(c.value))
        for c in suggestion.changes
    )


def deployment_problems(
    request: RunRequest, settings: PlatformSettings, setup: TrainingSetup | None = None
) -> list[str]:
    """A run that asks to be deployed must be servable: a merged model that fits the serving
    instance. Checked at launch, not after hours of training. ``setup``: the request's training
    setup when the caller has built it."""
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
    if setup is None:
        try:
            setup = TrainingSetup.from_request(request, PlatformLimits.from_settings(settings))
        except SetupError:
            return problems  # reported once, by the training checks
    fit = serving_fit(spec, setup.model, trained_sequence_length=setup.max_seq_length)
    if not fit.fits:
        problems.append(
            f"deployment.instance_type: {fit.reason}, fewer than the 1024 tokens a request "
            "needs; choose an instance with more GPU memory"
        )
    return problems


def dataset_uris(request: RunRequest, settings: PlatformSettings) -> list[tuple[str, str]]:
    """``(request field, s3 uri)`` of each channel the run reads (CHANNEL_FIELDS)."""
    if request.dataset is None:
        base = f"s3://{settings.datasets_bucket}/{DEFAULT_DATASET_PREFIX}"
        return [
            ("dataset.train", f"{base}/train.jsonl"),
            ("dataset.validation", f"{base}/validation.jsonl"),
            *_test_set(request),
        ]
    uris = [("dataset.train", request.dataset.train)]
    if request.dataset.validation:
        uris.append(("dataset.validation", request.dataset.validation))
    return uris + _test_set(request)


def _test_set(request: RunRequest) -> list[tuple[str, str]]:
    """The test set is the job's ``test`` channel: pinned like the training data, scored after
    training (llm_sft.evaluation)."""
    test = request.evaluation.dataset
    return [(channel_field("test"), test)] if test else []
