"""One training job, start to finish: data -> model -> train -> evaluate -> save -> report."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft.data import ChannelData, Example, load_channel, split_validation
from llm_sft.encoding import EncodedDataset
from llm_sft.hyperparameters import Hyperparameters
from llm_sft.metrics import format_final_line
from llm_sft.modeling import BaseModel, DevicePlan, resolve_base_model
from llm_sft.packing import Row
from llm_sft.paths import JobPaths
from llm_sft.serving_reference import ReferenceExamples
from llm_sft.tracking import Tracker, dataset_identity_from_env, start_tracking

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
# Beside the checkpoints, so that a restarted job continues the same MLflow run.
MLFLOW_RUN_FILE = "mlflow_run.json"


@dataclass(frozen=True)
class PreparedData:
    train: list[Example]
    validation: list[Example]
    identity: dict[str, dict[str, Any]]


def prepare_data(hp: Hyperparameters, paths: JobPaths) -> PreparedData:
    """Read and validate every channel (no torch needed: bad data fails in seconds)."""
    train_channel = load_channel("train", paths.train)
    validation_channel: ChannelData | None = None
    if paths.validation is not None:
        validation_channel = load_channel("validation", paths.validation)
    env_identity = dataset_identity_from_env()
    identity: dict[str, dict[str, Any]] = {
        "train": {**train_channel.identity(), "source": "channel", "path": str(paths.train)}
    }
    if validation_channel is not None:
        train, validation = list(train_channel.examples), list(validation_channel.examples)
        identity["validation"] = {
            **validation_channel.identity(),
            "source": "channel",
            "path": str(paths.validation),
        }
    else:
        train, validation = split_validation(train_channel.examples, hp.validation_split, hp.seed)
        identity["train"]["rows_after_split"] = len(train)
        if validation:
            identity["validation"] = {
                "source": f"split {hp.validation_split} of train (seed {hp.seed})",
                "sha256": train_channel.sha256,
                "rows": len(validation),
            }
    for name, extra in env_identity.items():
        if name in identity and isinstance(extra, dict):
            identity[name].update(
                {k: v for k, v in extra.items() if k in ("uri", "version_id", "etag")}
            )
    logger.info(
        "data: %d training rows, %d validation rows (train sha256 %s)",
        len(train),
        len(validation),
        train_channel.sha256[:12],
    )
    return PreparedData(train=train, validation=validation, identity=identity)


def _fingerprint(
    hp: Hyperparameters, base: BaseModel, data: PreparedData, packing: bool
) -> dict[str, object]:
    """What must match for a checkpoint to be resumable (JSON-round-trippable values only)."""
    targets = hp.lora_target_modules
    return {
        "base_model": base.reference,
        "method": hp.method,
        "lora": [hp.lora_r, hp.lora_alpha, hp.lora_dropout],
        "lora_target_modules": targets if isinstance(targets, str) else list(targets),
        "max_seq_length": hp.max_seq_length,
        "packing": packing,
        "batch": [hp.per_device_train_batch_size, hp.gradient_accumulation_steps],
        "optimizer": [hp.learning_rate, hp.weight_decay, hp.lr_scheduler_type, hp.warmup_ratio],
        "seed": hp.seed,
        "train_sha256": str(data.identity["train"]["sha256"]),
        "train_rows": len(data.train),
    }


def _configure_runtime(hp: Hyperparameters) -> None:
    import torch
    import transformers

    # peft calls a transformers property that transformers 5 deprecates; nothing to act on.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    if hp.torch_threads > 0:
        torch.set_num_threads(hp.torch_threads)
    transformers.set_seed(hp.seed)


def _save_and_release(
    trainer: Any,
    tokenizer: Any,
    base: BaseModel,
    hp: Hyperparameters,
    plan: DevicePlan,
    paths: JobPaths,
    reference: ReferenceExamples,
) -> str:
    """Save the model; the trainer gives up its references so QLoRA can free GPU memory."""
    from llm_sft import output

    model = trainer.model
    trainer.model = trainer.optimizer = trainer.scheduler = None
    if not hp.merge_adapter:
        output.save_adapter(
            model, tokenizer, base, paths.model_dir, reference=reference, serving_files=True
        )
        return "adapter"
    if not plan.quantize_4bit:
        output.save_merged_in_memory(
            model, tokenizer, base, hp, paths.model_dir, reference=reference
        )
        return "merged"
    with tempfile.TemporaryDirectory(prefix="adapter-") as scratch:
        output.save_adapter(model, tokenizer, base, Path(scratch))
        del model
        gc.collect()
        output.merge_saved_adapter(
            Path(scratch), tokenizer, base, hp, plan, paths.model_dir, reference=reference
        )
    return "merged"


@dataclass
class _Setup:
    """Everything the training loop needs, built from validated data and the base model."""

    plan: DevicePlan
    tokenizer: Any
    model: Any
    train_set: EncodedDataset
    eval_set: EncodedDataset
    packing: bool
    row_length: int
    train_rows: list[Row]
    eval_rows: list[Row]


def _set_up(hp: Hyperparameters, base: BaseModel, data: PreparedData) -> _Setup:
    from llm_sft.encoding import encode_examples
    from llm_sft.modeling import (
        add_lora,
        load_base_model,
        load_tokenizer,
        plan_device,
        supports_packing,
    )
    from llm_sft.packing import build_rows, pack_length

    plan = plan_device(hp)
    tokenizer = load_tokenizer(base, hp)
    train_set = encode_examples(tokenizer, data.train, hp.max_seq_length, "train")
    eval_set = encode_examples(tokenizer, data.validation, hp.max_seq_length, "validation")
    model = load_base_model(base, hp, plan)
    packing = hp.packing
    if packing and not supports_packing(model):
        logger.warning(
            "packing disabled: %s (attention %s) does not build masks from position_ids",
            type(model).__name__,
            getattr(model.config, "_attn_implementation", "?"),
        )
        packing = False
    model = add_lora(model, hp, plan)
    row_length = pack_length(
        hp.max_seq_length,
        [len(e.input_ids) for e in (*train_set.examples, *eval_set.examples)],
        getattr(model.config, "hidden_size", None),
    )
    train_rows = build_rows(train_set.examples, row_length, packing)
    eval_rows = build_rows(eval_set.examples, row_length, packing)
    logger.info(
        "%d training samples in %d rows, %d validation samples in %d rows (packing=%s, rows of"
        " at most %d tokens)",
        len(train_set.examples),
        len(train_rows),
        len(eval_set.examples),
        len(eval_rows),
        packing,
        row_length,
    )
    return _Setup(
        plan, tokenizer, model, train_set, eval_set, packing, row_length, train_rows, eval_rows
    )


def run_job(hp: Hyperparameters, paths: JobPaths) -> dict[str, Any]:
    """Train, save the model and `evaluation.json`; returns the evaluation payload."""
    started = time.time()
    data = prepare_data(hp, paths)
    base = resolve_base_model(hp.model_id, paths.model_channel)
    logger.info("base model %s (%s: %s)", base.reference, base.source, base.path)
    _configure_runtime(hp)
    from llm_sft.output import write_json
    from llm_sft.trainer import Trainer

    setup = _set_up(hp, base, data)
    fingerprint = {**_fingerprint(hp, base, data, setup.packing), "pack_length": setup.row_length}
    marker = paths.checkpoint_dir / MLFLOW_RUN_FILE if hp.save_steps > 0 else None
    tracker: Tracker = start_tracking(marker, _digest(fingerprint))
    succeeded = False
    try:
        tracker.log_params(
            {**hp.to_dict(), "base_model": base.reference, "packing_effective": setup.packing}
            | {f"device.{k}": v for k, v in setup.plan.__dict__.items()}
        )
        tracker.log_datasets(data.identity)
        trainer = Trainer(
            setup.model,
            hp,
            setup.plan,
            setup.train_rows,
            setup.eval_rows,
            pad_token_id=int(setup.tokenizer.pad_token_id),
            checkpoint_dir=paths.checkpoint_dir,
            fingerprint=fingerprint,
            metric_sink=tracker.log_metrics,
        )
        setup.model = None  # the trainer holds it; see _save_and_release
        result = trainer.train()

        final = {
            "eval_loss": result.eval_loss,
            "perplexity": _perplexity(result.eval_loss),
            "train_loss": result.train_loss,
            "tokens_per_second": result.tokens_per_second,
        }
        print(format_final_line(**final), flush=True)
        reference = ReferenceExamples.from_split(data.validation, data.train)
        saved = _save_and_release(trainer, setup.tokenizer, base, hp, setup.plan, paths, reference)
        evaluation: dict[str, Any] = {
            **final,
            "train_runtime_seconds": round(result.train_seconds, 3),
            "job_runtime_seconds": round(time.time() - started, 3),
            "global_step": result.global_step,
            "resumed_from_step": result.resumed_from_step,
            "train_samples": len(setup.train_set.examples),
            "eval_samples": len(setup.eval_set.examples),
            "train_rows": len(setup.train_rows),
            "train_tokens": result.tokens,
            "truncated_samples": setup.train_set.truncated + setup.eval_set.truncated,
            "dropped_samples": setup.train_set.dropped + setup.eval_set.dropped,
            "packing": setup.packing,
            "pack_length": setup.row_length,
            "datasets": data.identity,
            "base_model": {"reference": base.reference, "source": base.source, "path": base.path},
            "method": hp.method,
            "saved": saved,
            "device": setup.plan.__dict__,
            "hyperparameters": hp.to_dict(),
        }
        write_json(paths.output_data_dir / EVALUATION_FILE, evaluation)
        # Prefixed: the unprefixed series are per step, and the final train_loss is a mean.
        tracker.log_metrics(
            {f"final_{k}": float(v) for k, v in final.items() if v is not None},
            step=result.global_step,
        )
        tracker.log_dict(evaluation, EVALUATION_FILE)
        if hp.mlflow_log_model:
            tracker.log_model_folder(paths.model_dir)
        succeeded = True
        logger.info("done: %s model in %s", saved, paths.model_dir)
        return evaluation
    finally:
        tracker.finish(succeeded)


def _digest(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf
