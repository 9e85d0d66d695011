"""``finetune estimate``: instance fit, price per hour and run cost of a run request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune.errors import EXIT_USAGE, CliError
from runspec.catalog import UnknownInstanceType
from runspec.estimate import estimate_run, tokens_from_steps
from runspec.request import RunRequest
from stacks.config import PlatformConfig

__all__ = ["estimate_request"]

#: Training-code defaults the estimate assumes for unset hyperparameters.
_DEFAULTS = {"max_seq_length": 1024, "per_device_train_batch_size": 4, "lora_r": 16}
#: Tokens when neither --tokens, max_steps nor a local dataset says: a mid-sized instruction set.
ASSUMED_TOKENS = 10_000_000
#: Characters per token for English text with Llama-family tokenizers (rule of thumb).
CHARS_PER_TOKEN = 4.0


def estimate_request(
    request: RunRequest,
    config: PlatformConfig,
    *,
    region: str | None,
    tokens: int | None,
    dataset: Path | None,
) -> dict[str, Any]:
    hp = request.hyperparameters
    sequence_length = hp.max_seq_length or _DEFAULTS["max_seq_length"]
    micro_batch = hp.per_device_train_batch_size or _DEFAULTS["per_device_train_batch_size"]
    epochs = hp.epochs or 1.0
    tokens_basis: str
    if tokens is not None:
        tokens_basis = "given with --tokens"
    elif hp.max_steps and hp.max_steps > 0:
        tokens = tokens_from_steps(
            hp.max_steps, micro_batch, hp.gradient_accumulation_steps or 1, sequence_length, 1
        )
        tokens_basis = "max_steps × batch × accumulation × max_seq_length"
    elif dataset is not None:
        tokens = _dataset_tokens(dataset, epochs)
        tokens_basis = f"{dataset.name}: characters / {CHARS_PER_TOKEN:g} × {epochs:g} epochs"
    else:
        tokens = ASSUMED_TOKENS
        tokens_basis = "assumed; pass --tokens or --dataset for your data"
    instance_type = request.training.instance_type or config.training_instance_type
    try:
        estimate = estimate_run(
            request.base_model,
            method=request.method,
            instance_type=instance_type,
            sequence_length=sequence_length,
            micro_batch_size=micro_batch,
            tokens=tokens,
            instance_count=request.training.instance_count,
            lora_r=hp.lora_r or _DEFAULTS["lora_r"],
            region=region or config.region or "us-east-1",
            parameters_billions=request.model_parameters_billions,
            multi_gpu="layer_split",
        )
    except UnknownInstanceType as error:
        raise CliError(str(error), exit_code=EXIT_USAGE) from None
    except ValueError as error:
        raise CliError(
            f"model_parameters_billions: {error}",
            hint="set model_parameters_billions in the run file",
            exit_code=EXIT_USAGE,
        ) from None
    result = estimate.to_dict()
    result["tokens_basis"] = tokens_basis
    result["spot_requested"] = request.training.spot
    return result


def _dataset_tokens(path: Path, epochs: float) -> int:
    characters = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    characters += len(json.dumps(json.loads(line), ensure_ascii=False))
    except (OSError, ValueError) as error:
        raise CliError(f"{path}: cannot read as JSONL ({error})", exit_code=EXIT_USAGE) from None
    return max(1, int(characters / CHARS_PER_TOKEN * epochs))
