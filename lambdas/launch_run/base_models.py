"""Where a run's base model comes from, checked at launch, and the job's model channel.

Three sources (runspec.request.RunRequest.base_model):

- ``s3://<datasets bucket>/...`` folder: staged by people or ``finetune stage-model`` (a pinned
  Hub snapshot, its revision in the path); read by the job through the ``model`` channel.
- ``jumpstart:<model id>``: a SageMaker JumpStart model. The launch function has no SageMaker
  SDK (with pandas and scipy it outgrows a Lambda package), so ``finetune launch`` and the Studio
  notebook resolve it with the SDK's JumpStart metadata into the request's ``jumpstart`` block
  (version, weights folder, license); here the pin is held to the region's JumpStart buckets
  and to the license: a model with an EULA (or in the gated bucket) needs ``accept_eula: true``,
  which the job passes to SageMaker (``ModelAccessConfig.AcceptEula`` on the model channel,
  CreateTrainingJob API reference). No Hub token and no internet egress: the weights come
  through the VPC's S3 gateway endpoint.
- a Hub id: downloaded by the job, so the platform needs internet egress.
"""

from __future__ import annotations

from typing import Any

from runspec.request import JUMPSTART_ID, S3_URI, RunRequest
from runspec.settings import PlatformSettings

__all__ = [
    "base_model_problems",
    "jumpstart_buckets",
    "model_channel_source",
    "needs_eula",
]


def jumpstart_buckets(region: str) -> tuple[str, str]:
    """The region's JumpStart content bucket and its gated (licensed models) bucket, as the
    SageMaker SDK names them (sagemaker.core.jumpstart.utils.get_jumpstart_content_bucket /
    get_jumpstart_gated_content_bucket)."""
    return f"jumpstart-cache-prod-{region}", f"jumpstart-private-cache-prod-{region}"


def needs_eula(request: RunRequest, region: str) -> bool:
    """Whether the JumpStart model has a license to accept: it names one, or its weights are in
    the gated bucket (the SDK's ``is_gated_model``)."""
    pin = request.jumpstart
    if pin is None:
        return False
    bucket = S3_URI.match(pin.artifact_uri).group("bucket")  # type: ignore[union-attr]
    return pin.eula_uri is not None or bucket == jumpstart_buckets(region)[1]


def base_model_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    """The platform's rules for ``base_model``, as ``field: rule`` lines."""
    model = request.base_model
    if JUMPSTART_ID.match(model):
        return _jumpstart_problems(request, settings)
    if request.accept_eula:
        return ["accept_eula: only for JumpStart base models (base_model: jumpstart:<model id>)"]
    if model.startswith("s3://"):
        bucket = S3_URI.match(model).group("bucket")  # type: ignore[union-attr]
        if bucket != settings.datasets_bucket:
            return [
                f"base_model: {model!r} is outside the platform's datasets bucket "
                f"{settings.datasets_bucket!r}; stage the model folder there "
                "(finetune stage-model <hub id> copies a Hub snapshot)"
            ]
        return []
    if not settings.internet_egress:
        return [
            f"base_model: {model!r} is a Hugging Face Hub id, but this platform has no internet "
            "egress; stage it in the datasets bucket (finetune stage-model) and give its s3:// "
            "folder, or use a JumpStart model (jumpstart:<model id>)"
        ]
    return []


def _jumpstart_problems(request: RunRequest, settings: PlatformSettings) -> list[str]:
    pin = request.jumpstart
    if pin is None:
        return [
            f"base_model: {request.base_model!r} must be resolved before launch: finetune launch "
            "and the Studio notebook pin it with the SageMaker SDK's JumpStart metadata (the "
            "jumpstart block); this function has no SageMaker SDK"
        ]
    problems = []
    bucket = S3_URI.match(pin.artifact_uri).group("bucket")  # type: ignore[union-attr]
    if bucket not in jumpstart_buckets(settings.region):
        problems.append(
            f"jumpstart.artifact_uri: {pin.artifact_uri!r} is not in the JumpStart buckets of "
            f"{settings.region} ({', '.join(jumpstart_buckets(settings.region))}); resolve the "
            "model in this platform's region"
        )
    if needs_eula(request, settings.region) and not request.accept_eula:
        license_text = f" ({pin.eula_uri})" if pin.eula_uri else ""
        problems.append(
            f"accept_eula: {pin.model_id} is offered under an end-user license agreement"
            f"{license_text}; read it and set accept_eula: true to train on it"
        )
    return problems


def model_channel_source(request: RunRequest, region: str) -> dict[str, Any] | None:
    """The ``S3DataSource`` fields of the job's ``model`` channel beyond its URI (None: the job
    has no model channel): the JumpStart weights folder, with the license acceptance SageMaker
    requires for licensed models."""
    if request.jumpstart is not None:
        source: dict[str, Any] = {"S3Uri": request.jumpstart.artifact_uri}
        if needs_eula(request, region):
            source["ModelAccessConfig"] = {"AcceptEula": request.accept_eula}
        return source
    if request.base_model.startswith("s3://"):
        return {"S3Uri": request.base_model}
    return None
