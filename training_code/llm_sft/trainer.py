"""The training loop: packed micro-batches, token-weighted loss, eval, checkpoints, METRIC lines.

A small explicit loop rather than `transformers.Trainer`: the packed batches need
`use_cache=False` and position_ids on every forward, loss normalisation must count label
tokens across gradient-accumulation micro-batches, resume must verify checkpoint completeness,
and the metric lines are a contract with SageMaker -- each is a line or two here.

Under torchrun every process runs this loop on its share of each step's rows (see `Schedule`);
the label-token count of the whole global step is all-reduced before the step's backward
passes, so the gradient is the token-weighted mean over the global batch, as in one process.
Only rank 0 prints METRIC lines and reports to the metric sink.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft import checkpoints
from llm_sft.checkpoints import TrainerState
from llm_sft.distributed import SINGLE, DistContext, all_reduce_sum
from llm_sft.errors import ConfigurationError, SimulatedInterruptionError
from llm_sft.hyperparameters import Hyperparameters
from llm_sft.metrics import format_metric_line
from llm_sft.modeling import DevicePlan, input_device
from llm_sft.packing import Row, collate
from llm_sft.parallel import Engine

logger = logging.getLogger(__name__)

# Fault injection for tests of spot restarts: stop right after this global step (and its
# checkpoint), as if the instance had been reclaimed.
INTERRUPT_ENV = "LLM_SFT_SIMULATE_INTERRUPTION_AFTER_STEP"

MetricSink = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class Schedule:
    """Which rows each process trains on at optimizer step `s`: a pure function of
    (rows, seed, global batch, s), so a resumed job continues at the same step on every rank.

    Step `s` takes the next `batch_size * accumulation * world_size` rows of the epoch's
    shuffled order; micro-batch `m` of the step is the next `batch_size * world_size` of
    them, and process `r` trains on its `r`-th slice of `batch_size`. A single process with
    `batch_size * world_size` rows per micro-batch therefore trains on exactly the same rows
    in the same micro-batches.
    """

    rows: int
    batch_size: int  # per process and micro-batch
    accumulation: int
    seed: int
    world_size: int = 1

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.accumulation * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.rows / self.rows_per_step)

    def total_steps(self, epochs: float, max_steps: int) -> int:
        if max_steps > 0:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def step_rows(self, step: int) -> list[int]:
        """Every row of step `step`, over all processes, in micro-batch then rank order."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = list(range(self.rows))
        random.Random(self.seed + epoch).shuffle(order)  # noqa: S311 - data order, not crypto
        return order[offset * self.rows_per_step : (offset + 1) * self.rows_per_step]

    def micro_batches(self, step: int, rank: int = 0) -> list[list[int]]:
        """Process `rank`'s rows for each of the step's `accumulation` micro-batches.

        Always `accumulation` lists; at the end of an epoch some may be empty (on some ranks,
        or on all).
        """
        rows = self.step_rows(step)
        width = self.batch_size * self.world_size
        start = rank * self.batch_size
        return [
            rows[m * width : (m + 1) * width][start : start + self.batch_size]
            for m in range(self.accumulation)
        ]

    def micro_batch_is_empty(self, step: int, micro_batch: int) -> bool:
        """True when no process has rows in micro-batch `micro_batch` of `step`."""
        return len(self.step_rows(step)) <= micro_batch * self.batch_size * self.world_size


@dataclass(frozen=True)
class TrainResult:
    global_step: int
    train_loss: float | None
    eval_loss: float | None
    tokens: int
    train_seconds: float
    resumed_from_step: int | None

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else None


def _autocast(plan: DevicePlan) -> contextlib.AbstractContextManager[Any]:
    import torch

    if plan.bf16:
        return torch.autocast(device_type=plan.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _label_tokens(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != -100).sum().item())


def _emit(line: str) -> None:
    # stdout, flushed: SageMaker reads metrics from the log stream line by line.
    print(line, file=sys.stdout, flush=True)


def _pad_multiple(plan: DevicePlan) -> int:
    # Few distinct shapes on GPU (compiled kernels such as flex_attention's specialise on them).
    return 128 if plan.device == "cuda" else 1


def _placeholder(rows: Sequence[Row]) -> Row:
    """A short row for a process with no rows in a micro-batch that others train on: FSDP's
    gathers and DDP's reductions need every process to run the same passes. Its loss is
    multiplied by 0."""
    row = rows[0]
    length = min(len(row), 8)
    return Row(row.input_ids[:length], [-100] * length, list(range(length)))


def _zero_loss(out: Any) -> Any:
    # No label tokens: a 0 that still reaches every trainable parameter through the graph.
    return out.logits.float().sum() * 0.0


def evaluate(
    model: Any,
    rows: Sequence[Row],
    batch_size: int,
    pad_id: int,
    plan: DevicePlan,
    ctx: DistContext = SINGLE,
    lockstep: bool = False,
) -> float | None:
    """Token-weighted mean loss over all label tokens of `rows`.

    Under torchrun, process r evaluates batches r, r+W, ... and the sums are all-reduced.
    `lockstep` (FSDP) makes every process run the same number of forward passes.
    """
    import torch

    if not rows:
        return None
    was_training = model.training
    model.eval()
    device = input_device(model)
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    mine = batches[ctx.rank :: ctx.world_size]
    rounds = math.ceil(len(batches) / ctx.world_size) if lockstep else len(mine)
    loss_sum, count = 0.0, 0
    with torch.no_grad(), _autocast(plan):
        for index in range(rounds):
            real = index < len(mine)
            batch = collate(
                mine[index] if real else [_placeholder(rows)], pad_id, _pad_multiple(plan)
            )
            tokens = _label_tokens(batch) if real else 0
            if tokens == 0 and not lockstep:
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            if tokens == 0:
                model(
                    input_ids=batch["input_ids"],
                    position_ids=batch["position_ids"],
                    use_cache=False,
                )
                continue
            out = model(**batch, use_cache=False)
            loss_sum += float(out.loss.float().item()) * tokens
            count += tokens
    if was_training:
        model.train()
    loss_sum, total = all_reduce_sum([loss_sum, count])
    return loss_sum / total if total else None


def make_optimizer(
    model: Any, hp: Hyperparameters, plan: DevicePlan, total_steps: int, sharded: bool = False
) -> Any:
    import torch
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=hp.learning_rate,
        weight_decay=hp.weight_decay,
        # Fused on GPU (one kernel for all LoRA tensors); FSDP's sharded DTensors use foreach.
        fused=plan.device == "cuda" and not sharded,
    )
    scheduler = get_scheduler(
        hp.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


class Trainer:
    def __init__(
        self,
        model: Any,
        hp: Hyperparameters,
        plan: DevicePlan,
        train_rows: Sequence[Row],
        eval_rows: Sequence[Row],
        pad_token_id: int,
        checkpoint_dir: Path | None,
        fingerprint: dict[str, object],
        metric_sink: MetricSink | None = None,
        ctx: DistContext = SINGLE,
    ) -> None:
        """`model`: the peft model (one process) or the `Engine` wrapping it."""
        self.engine = model if isinstance(model, Engine) else Engine("single", model, model)
        self.model = self.engine.model
        self.hp = hp
        self.plan = plan
        self.ctx = ctx
        self.train_rows = list(train_rows)
        self.eval_rows = list(eval_rows)
        self.pad_id = pad_token_id
        self.checkpoint_dir = checkpoint_dir
        self.metric_sink = metric_sink
        parallel = self.engine.strategy != "single"
        self.schedule = Schedule(
            rows=len(self.train_rows),
            batch_size=hp.per_device_train_batch_size,
            accumulation=hp.gradient_accumulation_steps,
            seed=hp.seed,
            world_size=ctx.world_size if parallel else 1,
        )
        # DDP and FSDP average gradients over the processes; the loss is scaled back up.
        self.loss_scale = float(self.schedule.world_size)
        self.total_steps = self.schedule.total_steps(hp.epochs, hp.max_steps)
        self.fingerprint = {**fingerprint, "total_steps": self.total_steps}
        if self.schedule.world_size > 1:
            self.fingerprint["world_size"] = self.schedule.world_size
        self.optimizer, self.scheduler = make_optimizer(
            self.model, hp, plan, self.total_steps, sharded=self.engine.sharded
        )

    def _metrics(self, step: int, **values: float | None) -> None:
        if not self.ctx.is_main:
            return
        _emit(format_metric_line(step, **values))
        known = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
        if self.metric_sink is not None and known:
            self.metric_sink(known, step)

    def _resume(self) -> TrainerState:
        fresh = TrainerState(0, 0.0, 0, 0, 0.0, self.fingerprint)
        if self.checkpoint_dir is None:
            return fresh
        if self.engine.strategy != "single" or self.ctx.launched:
            # Rank 0 picks the checkpoint and reads it; the others receive it.
            found = checkpoints.find_resumable(self.checkpoint_dir, self.ctx)
            if found is None:
                return fresh
            chosen, saved = found
            self._check_fingerprint(chosen, saved)
            state = checkpoints.load_distributed(
                chosen, saved, self.engine, self.optimizer, self.scheduler, self.ctx
            )
            if self.ctx.is_main:
                logger.info("resuming from step %d (%s)", state.global_step, chosen)
            return state
        path = checkpoints.latest_complete(self.checkpoint_dir)
        if path is None:
            return fresh
        saved = checkpoints.read_state(path)
        self._check_fingerprint(path, saved)
        state = checkpoints.load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        logger.info("resuming from step %d (%s)", state.global_step, path)
        return state

    def _check_fingerprint(self, path: Path, saved: TrainerState) -> None:
        if saved.fingerprint != self.fingerprint:
            differs = sorted(
                k
                for k in set(saved.fingerprint) | set(self.fingerprint)
                if saved.fingerprint.get(k) != self.fingerprint.get(k)
            )
            raise ConfigurationError(
                f"checkpoint {path} was written by a different configuration (differs in:"
                f" {', '.join(differs)}); point checkpoint_dir at an empty folder to start over"
            )

    def _save(self, snapshot: TrainerState) -> None:
        assert self.checkpoint_dir is not None
        if self.engine.strategy != "single" or self.ctx.launched:
            checkpoints.save_distributed(
                self.checkpoint_dir,
                self.engine,
                self.optimizer,
                self.scheduler,
                snapshot,
                keep=self.hp.save_total_limit,
                ctx=self.ctx,
            )
            return
        checkpoints.save_checkpoint(
            self.checkpoint_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            snapshot,
            keep=self.hp.save_total_limit,
        )

    def _batches(self, step: int) -> Iterator[tuple[dict[str, Any], int, bool]]:
        """This process's collated micro-batches of `step`: (batch, real tokens, placeholder).

        Micro-batches empty on every process are skipped; one empty only here is a placeholder.
        """
        pad = _pad_multiple(self.plan)
        for index, indices in enumerate(self.schedule.micro_batches(step, self.ctx.rank)):
            if self.schedule.micro_batch_is_empty(step, index):
                continue
            if not indices:
                yield collate([_placeholder(self.train_rows)], self.pad_id, pad), 0, True
                continue
            rows = [self.train_rows[i] for i in indices]
            yield collate(rows, self.pad_id, pad), sum(len(r) for r in rows), False

    def _global_window(self, window_loss: Any, window_tokens: int) -> tuple[float, int]:
        """The open window's loss sum and input tokens over all processes."""
        loss, tokens = all_reduce_sum([float(window_loss.item()), window_tokens])
        return loss, int(tokens)

    def _evaluate(self) -> float | None:
        sharded = self.engine.sharded
        # DDP: the unwrapped model (no collectives in its forward); FSDP: the sharded module.
        return evaluate(
            self.engine.module if sharded else self.model,
            self.eval_rows,
            self.hp.eval_batch_size,
            self.pad_id,
            self.plan,
            self.ctx,
            lockstep=sharded,
        )

    def train(self) -> TrainResult:
        import torch

        hp = self.hp
        state = self._resume()
        resumed_from = state.global_step or None
        step, loss_sum, label_total = state.global_step, state.loss_sum, state.label_tokens
        tokens, seconds = state.tokens, state.train_seconds
        interrupt_after = int(os.environ.get(INTERRUPT_ENV, "0") or 0)
        device = input_device(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        window_loss = torch.zeros((), device=device)
        window_labels = window_tokens = 0
        window_seconds = 0.0
        eval_loss: float | None = None
        logger.info(
            "training: %d rows, %d steps/epoch, %d steps total, %s",
            len(self.train_rows),
            self.schedule.steps_per_epoch,
            self.total_steps,
            self.plan.describe(),
        )
        module = self.engine.module
        lockstep = self.engine.strategy != "single"
        module.train()
        while step < self.total_steps:
            started = time.perf_counter()
            batches = list(self._batches(step))
            counts = [0 if placeholder else _label_tokens(b) for b, _, placeholder in batches]
            # Label tokens of the whole global step: every process's loss share is taken of it.
            step_labels = int(all_reduce_sum([sum(counts)])[0]) if lockstep else sum(counts)
            lr = self.scheduler.get_last_lr()[0]
            for index, ((batch, real_tokens, _), count) in enumerate(
                zip(batches, counts, strict=True)
            ):
                if count == 0 and not lockstep:
                    continue
                window_tokens += real_tokens
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with self.engine.gradient_sync(index == len(batches) - 1), _autocast(self.plan):
                    if count == 0:
                        inputs = {k: v for k, v in batch.items() if k != "labels"}
                        out = module(**inputs, use_cache=False)
                        loss = _zero_loss(out)
                    else:
                        out = module(**batch, use_cache=False)
                        # out.loss is the mean over this micro-batch's label tokens; rescaling
                        # by the token share of the global step (times the processes, whose
                        # gradients DDP/FSDP average) makes the gradient the step's mean.
                        loss = out.loss * (count * self.loss_scale / step_labels)
                        window_loss += out.loss.detach().float() * count
                    loss.backward()
            if hp.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            window_labels += step_labels
            if self.plan.device == "cuda":
                torch.cuda.synchronize()
            window_seconds += time.perf_counter() - started

            if step % hp.logging_steps == 0 or step == self.total_steps:
                window, window_tokens = self._global_window(window_loss, window_tokens)
                loss_sum += window
                label_total += window_labels
                tokens += window_tokens
                seconds += window_seconds
                self._metrics(
                    step,
                    train_loss=window / window_labels if window_labels else None,
                    learning_rate=lr,
                    tokens_per_second=window_tokens / window_seconds if window_seconds else None,
                    epoch=round(self.schedule.epoch_of(step), 4),
                )
                window_loss.zero_()
                window_labels = window_tokens = 0
                window_seconds = 0.0
            if hp.eval_steps and step % hp.eval_steps == 0 and step < self.total_steps:
                loss = self._evaluate()
                self._metrics(step, eval_loss=loss, epoch=round(self.schedule.epoch_of(step), 4))
            save_now = hp.save_steps and (step % hp.save_steps == 0 or step == self.total_steps)
            if self.checkpoint_dir is not None and save_now:
                # Counters are flushed at logging steps only; fold the open window in first.
                open_loss, open_tokens = self._global_window(window_loss, window_tokens)
                snapshot = TrainerState(
                    step,
                    loss_sum + open_loss,
                    label_total + window_labels,
                    tokens + open_tokens,
                    seconds + window_seconds,
                    self.fingerprint,
                )
                self._save(snapshot)
            if interrupt_after and step == interrupt_after:
                raise SimulatedInterruptionError(f"simulated interruption after step {step}")

        eval_loss = self._evaluate()
        if eval_loss is not None:
            self._metrics(step, eval_loss=eval_loss, epoch=round(self.schedule.epoch_of(step), 4))
        return TrainResult(
            global_step=step,
            train_loss=loss_sum / label_total if label_total else None,
            eval_loss=eval_loss,
            tokens=tokens,
            train_seconds=seconds,
            resumed_from_step=resumed_from,
        )
