"""Smoke-test a freshly deployed endpoint: it answers, and it computes what training computed.

Two requests, TGI request shape (``/invocations`` of the Hugging Face LLM container):

1. A generation request: the endpoint answers with text.
2. With the model artifacts' S3 folder given: the reference example the training job scored
   (``serving_reference.json`` beside the model, written by ``llm_sft.serving_reference``) is
   sent with ``decoder_input_details``; TGI answers with the prompt tokens it computed and each
   token's log-probability (``details.prefill``). The endpoint passes when its tokenizer
   produced the same token ids as training and the served loss over the example's target
   tokens is within ``LOSS_TOLERANCE`` of the loss the training stack computed. A model that
   answers fluently but reads its config differently (e.g. the wrong rope base) fails here.

TGI 3 computes prompt log-probabilities only with ``ENABLE_PREFILL_LOGPROBS=true`` in the
container environment; without it ``prefill`` is empty and the test fails saying so. Cached
prompt prefixes (TGI's prefix caching) come back as ``null``: only positions with a
log-probability on both sides are compared, and too few of them fail the test.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

__all__ = [
    "LOSS_TOLERANCE",
    "REFERENCE_FILE",
    "SMOKE_PROMPT",
    "LossTolerance",
    "ServingReference",
    "SmokeTestFailed",
    "compare_with_reference",
    "load_reference",
    "scoring_request",
    "smoke_test",
]

SMOKE_PROMPT = "Say hello in one short sentence."
#: The file the training job writes next to the model (llm_sft.serving_contract.REFERENCE_FILE).
REFERENCE_FILE = "serving_reference.json"
REFERENCE_FORMAT = 1


@dataclass(frozen=True)
class LossTolerance:
    """|served - trained| <= absolute + relative * trained (nats per token).

    Serving runs other kernels, and possibly another dtype (TGI's float16 default against a
    bfloat16 reference), than the reference computation. Measured on an H200 (2026-12-04) with a
    4M-parameter Llama-3-style model trained 150 steps by the training code (reference: bf16,
    sdpa, 18 target tokens, loss 0.608): fp32, fp16 and eager attention moved the loss by at
    most 0.0023 nats (single tokens by up to 0.055); the same folder read with rope theta 10000
    and no scaling moved it by +0.36 (+0.82 on a 900-token input). TGI's own flash kernels were
    not measured (no serving container runs offline): every smoke result records
    ``loss_difference``, so the first deployments show how much of the margin they use.
    """

    absolute: float = 0.05
    relative: float = 0.02
    #: Share of the target tokens that must come back with a log-probability.
    min_scored_fraction: float = 0.5

    def allowed(self, trained_loss: float) -> float:
        return self.absolute + self.relative * abs(trained_loss)


LOSS_TOLERANCE = LossTolerance()


class SmokeTestFailed(Exception):  # noqa: N818 - the error name Step Functions catches
    """The endpoint did not answer correctly, or computes something else than training did."""


class ServingReference(BaseModel):
    """``serving_reference.json``: what the training stack computed for one example."""

    model_config = ConfigDict(extra="ignore")

    format: int
    source: str = ""
    held_out: bool = False
    inputs: str = Field(min_length=1)
    input_ids: list[int] = Field(min_length=2)
    token_logprobs: list[float | None]
    target_positions: list[int] = Field(min_length=1)
    loss: float


def smoke_test(
    runtime: SageMakerRuntimeClient,
    endpoint_name: str,
    *,
    s3: S3Client | None = None,
    model_artifacts: str | None = None,
    max_new_tokens: int = 16,
    tolerance: LossTolerance = LOSS_TOLERANCE,
) -> dict[str, Any]:
    """Generation check, then (with ``model_artifacts``) the reference check."""
    reference = None
    if model_artifacts is not None:
        if s3 is None:
            raise ValueError("model_artifacts needs an S3 client to read the serving reference")
        # Read first: a missing reference fails before the endpoint is called at all.
        reference = load_reference(s3, model_artifacts)
    body = {"inputs": SMOKE_PROMPT, "parameters": {"max_new_tokens": max_new_tokens}}
    text = _generated_text(_invoke(runtime, endpoint_name, body))
    if not text:
        raise SmokeTestFailed(f"endpoint {endpoint_name} answered without generated text")
    result: dict[str, Any] = {
        "endpoint_name": endpoint_name,
        "prompt": SMOKE_PROMPT,
        "generated_text": text[:500],
    }
    if reference is None:
        return result
    answer = _invoke(runtime, endpoint_name, scoring_request(reference))
    comparison = compare_with_reference(reference, answer, tolerance=tolerance)
    return {**result, "model_artifacts": model_artifacts, **comparison}


def load_reference(s3: S3Client, model_artifacts: str) -> ServingReference:
    """``serving_reference.json`` from the model artifacts' S3 folder."""
    bucket, key = _reference_location(model_artifacts)
    uri = f"s3://{bucket}/{key}"
    try:
        raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:  # botocore ClientError (NoSuchKey, AccessDenied) and friends
        code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
        if code in ("NoSuchKey", "404"):
            raise SmokeTestFailed(
                f"no serving reference at {uri}: the model was trained without one (before the"
                " serving contract, or its reference failed: see the training log), so the"
                " endpoint cannot be checked against training"
            ) from None
        raise SmokeTestFailed(f"cannot read the serving reference {uri}: {code}: {error}") from None
    try:
        reference = ServingReference.model_validate_json(raw)
    except ValidationError as error:
        raise SmokeTestFailed(f"serving reference {uri} is malformed: {error}") from None
    if reference.format != REFERENCE_FORMAT:
        raise SmokeTestFailed(
            f"serving reference {uri} has format {reference.format}; this smoke test reads"
            f" format {REFERENCE_FORMAT}"
        )
    if len(reference.token_logprobs) != len(reference.input_ids) or not all(
        0 < p < len(reference.input_ids) for p in reference.target_positions
    ):
        raise SmokeTestFailed(f"serving reference {uri} is inconsistent (positions, lengths)")
    return reference


def scoring_request(reference: ServingReference) -> dict[str, Any]:
    """TGI: compute the prompt's token log-probabilities (``details.prefill``), generate 1."""
    return {
        "inputs": reference.inputs,
        "parameters": {
            "decoder_input_details": True,
            "details": True,
            "max_new_tokens": 1,
            "do_sample": False,
            "return_full_text": False,
        },
    }


def compare_with_reference(
    reference: ServingReference, answer: Any, *, tolerance: LossTolerance = LOSS_TOLERANCE
) -> dict[str, Any]:
    """Served token ids and loss against the reference; raises SmokeTestFailed on a mismatch."""
    prefill = _prefill(answer)
    if not prefill:
        raise SmokeTestFailed(
            "the endpoint returned no prompt log-probabilities (details.prefill is empty): TGI"
            " computes them only with ENABLE_PREFILL_LOGPROBS=true in the model's environment"
        )
    served_ids = [token[0] for token in prefill]
    if served_ids != reference.input_ids:
        at = next(
            (
                i
                for i, (a, b) in enumerate(zip(served_ids, reference.input_ids, strict=False))
                if a != b
            ),
            min(len(served_ids), len(reference.input_ids)),
        )
        raise SmokeTestFailed(
            "the serving tokenizer produced other token ids than training for the reference"
            f" example ({len(served_ids)} served, {len(reference.input_ids)} trained; first"
            f" difference at position {at}: served {served_ids[at : at + 3]}, trained"
            f" {reference.input_ids[at : at + 3]})"
        )
    pairs = [
        (served, trained)
        for position in reference.target_positions
        if (served := prefill[position][1]) is not None
        and (trained := reference.token_logprobs[position]) is not None
    ]
    needed = max(1, math.ceil(tolerance.min_scored_fraction * len(reference.target_positions)))
    if len(pairs) < needed:
        raise SmokeTestFailed(
            f"the endpoint returned log-probabilities for {len(pairs)} of"
            f" {len(reference.target_positions)} target tokens (at least {needed} needed;"
            " a prompt served from TGI's prefix cache has none)"
        )
    served_loss = -math.fsum(s for s, _ in pairs) / len(pairs)
    trained_loss = -math.fsum(t for _, t in pairs) / len(pairs)
    difference = served_loss - trained_loss
    allowed = tolerance.allowed(trained_loss)
    comparison = {
        "reference_source": reference.source,
        "reference_held_out": reference.held_out,
        "scored_tokens": len(pairs),
        "trained_loss": round(trained_loss, 6),
        "served_loss": round(served_loss, 6),
        "loss_difference": round(difference, 6),
        "loss_tolerance": round(allowed, 6),
    }
    if not abs(difference) <= allowed:  # also fails on NaN
        raise SmokeTestFailed(
            f"the endpoint computes another model than training: loss on the reference example"
            f" {served_loss:.4f} served vs {trained_loss:.4f} at training (difference"
            f" {difference:+.4f}, allowed ±{allowed:.4f}, {len(pairs)} tokens of"
            f" {reference.source or 'the reference'})"
        )
    return comparison


def _invoke(runtime: Any, endpoint_name: str, body: dict[str, Any]) -> Any:
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(body).encode(),
        )
    except Exception as error:  # botocore ModelError / ClientError / connection errors
        raise SmokeTestFailed(f"endpoint {endpoint_name} did not answer: {error}") from None
    raw = response["Body"].read()
    try:
        return json.loads(raw)
    except ValueError:
        raise SmokeTestFailed(
            f"endpoint {endpoint_name} answered with non-JSON: {raw[:200]!r}"
        ) from None


def _reference_location(model_artifacts: str) -> tuple[str, str]:
    if not model_artifacts.startswith("s3://"):
        raise SmokeTestFailed(f"model_artifacts must be an s3:// folder, got {model_artifacts!r}")
    bucket, _, prefix = model_artifacts[len("s3://") :].partition("/")
    if not bucket:
        raise SmokeTestFailed(f"model_artifacts has no bucket: {model_artifacts!r}")
    if prefix.endswith((".tar.gz", ".tgz")):
        raise SmokeTestFailed(
            f"model_artifacts {model_artifacts} is an archive; the smoke test reads"
            f" {REFERENCE_FILE} from the uncompressed model folder (CompressionType NONE)"
        )
    prefix = prefix.rstrip("/")
    return bucket, f"{prefix}/{REFERENCE_FILE}" if prefix else REFERENCE_FILE


def _first(answer: Any) -> Any:
    """TGI answers ``[{...}]`` on /invocations (a bare object on /generate)."""
    if isinstance(answer, list) and answer:
        return answer[0]
    return answer


def _generated_text(answer: Any) -> str:
    answer = _first(answer)
    if isinstance(answer, dict):
        text = answer.get("generated_text")
        return text if isinstance(text, str) else ""
    return ""


def _prefill(answer: Any) -> list[tuple[int, float | None]]:
    """``details.prefill`` as (id, logprob); TGI writes the first (and cached) logprobs as null."""
    answer = _first(answer)
    details = answer.get("details") if isinstance(answer, dict) else None
    prefill = details.get("prefill") if isinstance(details, dict) else None
    if not isinstance(prefill, list):
        return []
    tokens: list[tuple[int, float | None]] = []
    for item in prefill:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise SmokeTestFailed(f"unexpected details.prefill entry: {str(item)[:200]}")
        logprob = item.get("logprob")
        if isinstance(logprob, int | float) and math.isfinite(logprob):
            tokens.append((item["id"], float(logprob)))
        else:
            tokens.append((item["id"], None))
    return tokens
