"""What the job leaves behind: the model folder, evaluation.json and, on failure, the reason.

The model folder is written in the serving contract's format (llm_sft.serving_contract: the
files the pinned serving container reads, a manifest of the versions on both sides) with a
reference example scored by the training stack (llm_sft.serving_reference) that the deployment
smoke test compares the endpoint with.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_sft.hyperparameters import Hyperparameters
from llm_sft.modeling import BaseModel, DevicePlan, compute_dtype

if TYPE_CHECKING:
    from llm_sft.serving_reference import ReferenceExamples

logger = logging.getLogger(__name__)

FAILURE_LIMIT_BYTES = 1000  # SageMaker shows the first 1024 characters as FailureReason


def write_failure(output_dir: Path, reason: str) -> None:
    """One paragraph, no traceback, under 1 KB."""
    text = " ".join(reason.split())
    data = text.encode("utf-8")
    if len(data) > FAILURE_LIMIT_BYTES:
        text = data[: FAILURE_LIMIT_BYTES - 3].decode("utf-8", errors="ignore") + "..."
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failure").write_text(text + "\n", encoding="utf-8")
    except OSError as error:  # the reason still reaches the log
        logger.error("cannot write failure file in %s: %s", output_dir, error)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _base_dtype(base: BaseModel, hp: Hyperparameters) -> Any:
    """The dtype the base checkpoint was published in; the merged model is saved in it."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base.path, trust_remote_code=hp.trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def write_serving_files(
    model: Any, tokenizer: Any, model_dir: Path, reference: ReferenceExamples | None
) -> dict[str, Any]:
    """After save_pretrained: the serving format, the reference, the manifest (last)."""
    from llm_sft import serving_contract, serving_reference

    original = serving_contract.original_formats(model_dir)
    changes = serving_contract.make_servable(model_dir)
    written = serving_reference.write_reference(model, tokenizer, reference, model_dir)
    return serving_contract.write_manifest(
        model_dir, changes=changes, original=original, reference_written=written
    )


def _finish_merged(
    model: Any,
    tokenizer: Any,
    base: BaseModel,
    hp: Hyperparameters,
    out: Path,
    reference: ReferenceExamples | None,
) -> None:
    dtype = _base_dtype(base, hp)
    if dtype is not None and model.dtype != dtype:
        model = model.to(dtype)
    model.config.use_cache = True  # inference wants the KV cache back
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_serving_files(model, tokenizer, out, reference)


def save_adapter(
    model: Any,
    tokenizer: Any,
    base: BaseModel,
    target: Path,
    *,
    reference: ReferenceExamples | None = None,
    serving_files: bool = False,
) -> None:
    """The LoRA adapter alone (+ tokenizer); its config names the base by reference.

    ``serving_files`` for the job's output (not for a scratch copy): manifest and reference,
    scored with the adapter applied.
    """
    target.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = base.reference
    # Embeddings are not trained; "auto" would look the base up on the Hub to decide.
    model.save_pretrained(target, save_embedding_layers=False)
    tokenizer.save_pretrained(target)
    if serving_files:
        write_serving_files(model, tokenizer, target, reference)


def save_merged_in_memory(
    model: Any,
    tokenizer: Any,
    base: BaseModel,
    hp: Hyperparameters,
    model_dir: Path,
    *,
    reference: ReferenceExamples | None = None,
) -> None:
    """Merge a (non-quantized) LoRA model in place and save it as a plain transformers model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    merged = model.merge_and_unload()
    _finish_merged(merged, tokenizer, base, hp, model_dir, reference)


def merge_saved_adapter(
    adapter_dir: Path,
    tokenizer: Any,
    base: BaseModel,
    hp: Hyperparameters,
    plan: DevicePlan,
    model_dir: Path,
    *,
    reference: ReferenceExamples | None = None,
) -> None:
    """Merge an adapter into a fresh full-precision copy of the base (QLoRA path).

    4-bit weights cannot absorb the adapter without loss. The base is loaded from the base
    path given explicitly: the adapter config names the reference, not the training-time path.
    The caller must have dropped the training model first so its memory is free.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    full = AutoModelForCausalLM.from_pretrained(
        base.path,
        dtype=compute_dtype(plan),
        device_map="auto" if plan.device == "cuda" else None,
        trust_remote_code=hp.trust_remote_code,
    )
    merged = PeftModel.from_pretrained(full, str(adapter_dir)).merge_and_unload()
    model_dir.mkdir(parents=True, exist_ok=True)
    _finish_merged(merged, tokenizer, base, hp, model_dir, reference)
