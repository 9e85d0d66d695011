"""Resolve a JumpStart base model with the SageMaker SDK before launch.

``base_model: jumpstart:<model id>[@<version>]`` is resolved here, where the SageMaker SDK is
(the CLI's ``sagemaker-core``, the ``sagemaker`` SDK in Studio): the SDK reads the region's
JumpStart metadata (``models_manifest.json`` and the model's specs in the JumpStart content
bucket, through the S3 gateway endpoint: no internet egress) and names the model's weights
(``sagemaker.core.model_uris.retrieve``, inference scope: the uncompressed Hugging Face folder
the JumpStart endpoint itself serves) and its license. The result is pinned into the request's
``jumpstart`` block (runspec.request.JumpStartModel), which the launch function checks
(launch_run.base_models) and the run records.

Why not in the launch function: the SDK's JumpStart code imports pandas and scipy; with the SDK
the function's package would outgrow Lambda's 250 MB, and a layer for it would be rebuilt and
kept in step with the SDK by the platform. The CLI and the notebook already have the SDK.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from runspec.request import JUMPSTART_ID

__all__ = ["JumpStartError", "pin_base_model", "resolve_jumpstart"]


class JumpStartError(ValueError):
    """The JumpStart model cannot be used as a base model (one line, for people)."""


def resolve_jumpstart(base_model: str, *, region: str) -> dict[str, Any]:
    """The ``jumpstart`` block for ``base_model`` (``jumpstart:<id>[@<version>]``) in
    ``region``: the pinned version, the weights folder and the license, from the SDK."""
    match = JUMPSTART_ID.match(base_model)
    if match is None:
        raise JumpStartError(f"{base_model!r} is not 'jumpstart:<model id>[@<version>]'")
    model_id, version = match.group("model_id"), match.group("version") or "*"
    # The SDK logs a hint for wildcard versions and the EULA text's URL; the pin says both.
    logging.getLogger("sagemaker.jumpstart").setLevel(logging.ERROR)
    model_uris, accessor, content_bucket = _jumpstart_sdk()

    # One resolution per process, from the metadata as it is now (the SDK caches for hours).
    accessor.reset_cache()
    try:
        specs = accessor.get_model_specs(region=region, model_id=model_id, version=version)
    except (KeyError, ValueError) as error:
        raise JumpStartError(
            f"base_model: JumpStart has no model {model_id!r}"
            + (f" version {version}" if version != "*" else "")
            + f" in {region} ({error})"
        ) from None
    artifact = model_uris.retrieve(
        region=region, model_id=model_id, model_version=specs.version, model_scope="inference"
    )
    if not artifact.endswith("/"):
        raise JumpStartError(
            f"base_model: the weights of JumpStart model {model_id!r} are an archive "
            f"({artifact}), not a model folder; stage a Hub snapshot instead "
            "(finetune stage-model <hub id>)"
        )
    pin: dict[str, Any] = {"model_id": model_id, "version": specs.version, "artifact_uri": artifact}
    if specs.hosting_eula_key:
        pin["eula_uri"] = f"s3://{content_bucket(region)}/{specs.hosting_eula_key}"
    return pin


def _jumpstart_sdk() -> tuple[Any, Any, Any]:
    """The SageMaker SDK's JumpStart pieces: ``sagemaker.core`` (SDK v3, and the CLI's
    sagemaker-core), or the ``sagemaker`` v2 SDK that Studio images may carry; same names."""
    try:
        root = "sagemaker.core"
        importlib.import_module(f"{root}.jumpstart.accessors")
    except ImportError:  # the v2 SDK
        root = "sagemaker"
    return (
        importlib.import_module(f"{root}.model_uris"),
        importlib.import_module(f"{root}.jumpstart.accessors").JumpStartModelsAccessor,
        importlib.import_module(f"{root}.jumpstart.utils").get_jumpstart_content_bucket,
    )


def pin_base_model(document: dict[str, Any], *, region: str) -> dict[str, Any]:
    """``document`` with its JumpStart base model resolved (unchanged for other models, or when
    it is pinned already)."""
    model = document.get("base_model")
    if not isinstance(model, str) or not model.startswith("jumpstart:"):
        return document
    if document.get("jumpstart") is not None:
        return document
    return {**document, "jumpstart": resolve_jumpstart(model, region=region)}
