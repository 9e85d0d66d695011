"""Serving a merged model on a SageMaker endpoint: does it fit the instance, and with which token
limits. One source for the launch check, the serving container's environment and the CLI.

The serving container (TGI) keeps the weights in bf16 on the instance's GPUs (sharded over all of
them, ``SM_NUM_GPUS``) and reserves the rest, less its own overhead, for the KV cache (the bytes:
``runspec.estimate.memory``, the one memory model for training and serving). A model
that does not leave room for the KV cache of one full-length request does not start, and the
endpoint fails after the whole training run has been paid for: the launch function refuses such
a run up front with this module's answer. The token limits follow from the same arithmetic:
``MAX_TOTAL_TOKENS`` is what the KV cache holds for ``CONCURRENT_REQUESTS`` requests, capped at
``MAX_CONTEXT_TOKENS``, and never below the sequence length the model was fine-tuned on when that
fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from runspec.catalog import InstanceSpec, ModelShape
from runspec.estimate.memory import (
    kv_cache_gib_per_token,
    serving_kv_cache_gib,
    serving_weights_gib,
)

__all__ = [
    "CONCURRENT_REQUESTS",
    "CONTRACT_ENVIRONMENT",
    "MAX_CONTEXT_TOKENS",
    "MIN_SERVING_TOKENS",
    "ServingFit",
    "serving_environment",
    "serving_fit",
]

#: Requests the KV cache must hold at full length at once.
CONCURRENT_REQUESTS = 4
#: No request may be longer than this (most supported bases have 8k-128k contexts; longer
#: prompts than 8k are rare for fine-tuned task models and cost memory for every request).
MAX_CONTEXT_TOKENS = 8192
#: The shortest total length worth serving: below it the endpoint is refused.
MIN_SERVING_TOKENS = 1024
#: Room left for generated tokens: at most this many, at most a quarter of the total.
_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class ServingFit:
    fits: bool
    weights_gib: float
    kv_cache_gib_per_1k_tokens: float
    available_gib: float
    max_total_tokens: int
    max_input_tokens: int
    reason: str


def serving_fit(
    spec: InstanceSpec, shape: ModelShape, *, trained_sequence_length: int
) -> ServingFit:
    """Whether ``shape`` serves on ``spec`` and the token limits it serves with."""
    gpus = max(spec.gpus, 1)
    weights = serving_weights_gib(shape)
    kv_per_token = kv_cache_gib_per_token(shape)
    available = serving_kv_cache_gib(spec, shape)
    capacity_tokens = int(available / kv_per_token / CONCURRENT_REQUESTS)
    wanted = min(MAX_CONTEXT_TOKENS, max(trained_sequence_length, 4096))
    total = min(wanted, capacity_tokens) // 256 * 256
    fits = spec.has_nvidia_gpu and total >= MIN_SERVING_TOKENS
    new_tokens = min(_MAX_NEW_TOKENS, total // 4)
    reason = (
        f"{spec.name} has {gpus}x{spec.gpu_usable_memory_gib:.1f} GiB usable; a "
        f"{shape.size_label()} model needs {weights:.1f} GiB for its bf16 weights and "
        f"{kv_per_token * 1024:.2f} GiB of KV cache per 1k tokens, leaving room for "
        f"{capacity_tokens} tokens per request at {CONCURRENT_REQUESTS} concurrent requests"
    )
    return ServingFit(
        fits=fits,
        weights_gib=round(weights, 2),
        kv_cache_gib_per_1k_tokens=round(kv_per_token * 1024, 4),
        available_gib=round(available, 2),
        max_total_tokens=total,
        max_input_tokens=max(total - new_tokens, 0),
        reason=reason,
    )


#: What every deployment of a model the platform trained needs from the serving container
#: (llm_sft.serving_contract.SERVING_ENVIRONMENT, checked equal by tests/serving): prompt
#: log-probabilities for the smoke test's check against training, and bf16 (TGI otherwise serves
#: Llama-family models in float16; every GPU the platform serves on computes bf16).
CONTRACT_ENVIRONMENT = {"ENABLE_PREFILL_LOGPROBS": "true", "DTYPE": "bfloat16"}


def serving_environment(fit: ServingFit | None, *, gpus: int) -> dict[str, str]:
    """The serving container's environment (CreateModel ``Environment``): TGI reads the merged
    model SageMaker places in /opt/ml/model, shards it over the instance's GPUs. Without a fit
    (an instance or model the catalog does not know, only possible when deployment is off) the
    token limits are the container's own defaults."""
    environment = {
        "HF_MODEL_ID": "/opt/ml/model",
        "SM_NUM_GPUS": str(max(gpus, 1)),
        "MESSAGES_API_ENABLED": "true",
        **CONTRACT_ENVIRONMENT,
    }
    if fit is not None and fit.fits:
        environment["MAX_INPUT_TOKENS"] = str(fit.max_input_tokens)
        environment["MAX_TOTAL_TOKENS"] = str(fit.max_total_tokens)
    return environment
