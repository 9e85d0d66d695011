"""One training job, start to finish: data -> model -> train -> evaluate -> save -> report.

Under torchrun every process runs `run_job`: each validates the data (so bad data fails every
process in seconds, before any process group exists), loads its part of the model, and trains
its share of every step; rank 0 alone talks to MLflow, prints METRIC lines and writes the
checkpoints, `evaluation.json` and the model.
"""

from __future__ import annotations

import dataclasses
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

from llm_sft import distributed
from llm_sft import evaluation as evaluation_module
from llm_sft.data import ChannelData, Example, load_channel, split_validation
from llm_sft.distributed import SINGLE, DistContext
from llm_sft.encoding import EncodedDataset
from llm_sft.errors import ConfigurationError
from llm_sft.hyperparameters import Hyperparameters
from llm_sft.metrics import format_final_line
from llm_sft.modeling import BaseModel, DevicePlan, resolve_base_model
from llm_sft.packing import Row
from llm_sft.parallel import Engine
from llm_sft.paths import JobPaths
from llm_sft.serving_reference import ReferenceExamples
from llm_sft.strategy import StrategyChoice, StrategyError, choose_strategy
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
    trainer.model = trainer.optimizer = trainer.scheduler = trainer.engine = None
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


def _release(trainer: Any) -> None:
    import torch

    trainer.model = trainer.optimizer = trainer.scheduler = trainer.engine = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Holder:
    """What `_save_and_release` takes from a trainer: the model to save."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.optimizer = self.scheduler = self.engine = None


def _save_distributed(
    trainer: Any,
    tokenizer: Any,
    base: BaseModel,
    hp: Hyperparameters,
    plan: DevicePlan,
    paths: JobPaths,
    reference: ReferenceExamples,
    ctx: DistContext,
) -> str | None:
    """Collective: the model is saved once, by rank 0; returns what it saved (rank 0 only).

    DDP: rank 0 holds the whole model and saves it as one process would, once the other
    processes have freed their GPUs. FSDP: the LoRA weights are gathered to rank 0, every
    process frees its shards, and rank 0 applies them to a fresh copy of the base (spread over
    this instance's GPUs if it needs several), then saves as one process would.
    """
    engine: Engine = trainer.engine
    if not engine.sharded:
        if not ctx.is_main:
            _release(trainer)
        distributed.barrier()
        if not ctx.is_main:
            return None
        return _save_and_release(trainer, tokenizer, base, hp, plan, paths, reference)
    from llm_sft.parallel import trainable_state

    adapter = trainable_state(engine)  # every rank takes part; rank 0 receives it
    with tempfile.TemporaryDirectory(prefix="adapter-") as scratch:
        if ctx.is_main:
            trainer.model.save_pretrained(scratch, state_dict=adapter, save_embedding_layers=False)
        del adapter
        _release(trainer)
        distributed.barrier()
        if not ctx.is_main:
            return None
        from peft import PeftModel

        from llm_sft.modeling import load_base_model

        # One process now: the base may spread over this instance's GPUs (device_map auto).
        alone = dataclasses.replace(plan, launched=False)
        model = PeftModel.from_pretrained(load_base_model(base, hp, alone), scratch)
    return _save_and_release(_Holder(model), tokenizer, base, hp, alone, paths, reference)


def _decide_strategy(
    hp: Hyperparameters, base: BaseModel, plan: DevicePlan, ctx: DistContext
) -> StrategyChoice:
    if not ctx.launched:
        if hp.distributed_strategy != "auto":
            logger.warning(
                "distributed_strategy=%s ignored: this job runs one process (it was not started"
                " by torchrun; SageMaker does that with sagemaker_torch_distributed_enabled)",
                hp.distributed_strategy,
            )
        return StrategyChoice("single", "one process")
    import torch

    from llm_sft.modeling import model_parameters

    gpu_memory = (
        torch.cuda.get_device_properties(plan.local_rank).total_memory
        if plan.device == "cuda"
        else None
    )
    try:
        return choose_strategy(
            requested=hp.distributed_strategy,
            method=hp.method,
            world_size=ctx.world_size,
            parameters=model_parameters(base, hp),
            gpu_memory_bytes=gpu_memory,
            dtype_bytes=2 if plan.bf16 else 4,
        )
    except StrategyError as error:
        raise ConfigurationError(str(error)) from None


@dataclass
class _Setup:
    """Everything the training loop needs, built from validated data and the base model."""

    plan: DevicePlan
    tokenizer: Any
    model: Any  # the Engine around the peft model
    strategy: StrategyChoice
    train_set: EncodedDataset
    eval_set: EncodedDataset
    packing: bool
    row_length: int
    train_rows: list[Row]
    eval_rows: list[Row]


def _set_up(
    hp: Hyperparameters, base: BaseModel, data: PreparedData, ctx: DistContext = SINGLE
) -> _Setup:
    from llm_sft.encoding import encode_examples
    from llm_sft.modeling import load_tokenizer, plan_device, supports_packing
    from llm_sft.packing import build_rows, pack_length
    from llm_sft.parallel import build_engine

    plan = plan_device(hp, ctx)
    distributed.init_process_group(ctx, plan.device)
    strategy = _decide_strategy(hp, base, plan, ctx)
    if ctx.launched:
        logger.info("strategy: %s (%s)", strategy.strategy, strategy.reason)
    tokenizer = load_tokenizer(base, hp)
    train_set = encode_examples(tokenizer, data.train, hp.max_seq_length, "train")
    eval_set = encode_examples(tokenizer, data.validation, hp.max_seq_length, "validation")
    engine = build_engine(hp, base, plan, ctx, strategy.strategy)
    transformer = engine.model.get_base_model()
    packing = hp.packing
    if packing and not supports_packing(transformer):
        logger.warning(
            "packing disabled: %s (attention %s) does not build masks from position_ids",
            type(transformer).__name__,
            getattr(transformer.config, "_attn_implementation", "?"),
        )
        packing = False
    row_length = pack_length(
        hp.max_seq_length,
        [len(e.input_ids) for e in (*train_set.examples, *eval_set.examples)],
        getattr(transformer.config, "hidden_size", None),
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
        plan,
        tokenizer,
        engine,
        strategy,
        train_set,
        eval_set,
        packing,
        row_length,
        train_rows,
        eval_rows,
    )


def run_job(
    hp: Hyperparameters, paths: JobPaths, ctx: DistContext = SINGLE
) -> dict[str, Any] | None:
    """Train, save the model and `evaluation.json`; returns the evaluation payload (rank 0;
    None on the other processes)."""
    started = time.time()
    data = prepare_data(hp, paths)
    # The test set is checked with the training data, before any model is loaded.
    test_set = evaluation_module.load_test_set(
        evaluation_module.find_test_channel(paths.train),
        dataset_identity_from_env().get("test"),
    )
    base = resolve_base_model(hp.model_id, paths.model_channel)
    logger.info("base model %s (%s: %s)", base.reference, base.source, base.path)
    _configure_runtime(hp)
    from llm_sft.output import write_json
    from llm_sft.trainer import Trainer

    setup = _set_up(hp, base, data, ctx)
    fingerprint = {**_fingerprint(hp, base, data, setup.packing), "pack_length": setup.row_length}
    marker = paths.checkpoint_dir / MLFLOW_RUN_FILE if hp.save_steps > 0 else None
    tracker: Tracker = start_tracking(marker, _digest(fingerprint)) if ctx.is_main else Tracker()
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
            ctx=ctx,
        )
        setup.model = None  # the trainer holds it; see _save_and_release
        result = trainer.train()

        final = {
            "eval_loss": result.eval_loss,
            "perplexity": _perplexity(result.eval_loss),
            "train_loss": result.train_loss,
            "tokens_per_second": result.tokens_per_second,
        }
        if ctx.is_main:
            print(format_final_line(**final), flush=True)
        reference = ReferenceExamples.from_split(data.validation, data.train)
        if ctx.launched:
            saved = _save_distributed(
                trainer, setup.tokenizer, base, hp, setup.plan, paths, reference, ctx
            )
        else:
            saved = _save_and_release(
                trainer, setup.tokenizer, base, hp, setup.plan, paths, reference
            )
        if not ctx.is_main:
            succeeded = True
            return None
        scored = evaluation_module.evaluate_job(
            test_set=test_set,
            settings=evaluation_module.EvaluationSettings.from_env(),
            tokenizer=setup.tokenizer,
            model_dir=paths.model_dir,
            output_data_dir=paths.output_data_dir,
            saved=saved or "merged",
            base_path=base.path,
            plan=setup.plan,
            max_seq_length=hp.max_seq_length,
            validation=data.identity.get("validation") or {},
            validation_loss=result.eval_loss,
            tracker=tracker,
            datasets=data.identity,
            step=result.global_step,
        )
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
            "distributed": {
                "strategy": setup.strategy.strategy,
                "reason": setup.strategy.reason,
                "world_size": ctx.world_size,
                "nodes": ctx.nodes,
                "rows_per_step": trainer.schedule.rows_per_step,
            },
            "hyperparameters": hp.to_dict(),
            "scored": scored,
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
