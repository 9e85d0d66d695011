"""The training loop: packed micro-batches, token-weighted loss, eval, checkpoints, METRIC lines.

A small explicit loop rather than `transformers.Trainer`: the packed batches need
`use_cache=False` and position_ids on every forward, loss normalisation must count label
tokens across gradient-accumulation micro-batches, resume must verify checkpoint completeness,
and the metric lines are a contract with SageMaker -- each is a line or two here.
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
from llm_sft.errors import ConfigurationError, SimulatedInterruptionError
from llm_sft.hyperparameters import Hyperparameters
from llm_sft.metrics import format_metric_line
from llm_sft.modeling import DevicePlan, input_device
from llm_sft.packing import Row, collate

logger = logging.getLogger(__name__)

# Fault injection for tests of spot restarts: stop right after this global step (and its
# checkpoint), as if the instance had been reclaimed.
INTERRUPT_ENV = "LLM_SFT_SIMULATE_INTERRUPTION_AFTER_STEP"

MetricSink = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class Schedule:
    """Which micro-batches make up optimizer step `s`: a pure function of (rows, seed, s)."""

    rows: int
    batch_size: int
    accumulation: int
    seed: int

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.accumulation)

    def total_steps(self, epochs: float, max_steps: int) -> int:
        if max_steps > 0:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def micro_batches(self, step: int) -> list[list[int]]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = list(range(self.rows))
        random.Random(self.seed + epoch).shuffle(order)  # noqa: S311 - data order, not crypto
        batches = [order[i : i + self.batch_size] for i in range(0, self.rows, self.batch_size)]
        return batches[offset * self.accumulation : (offset + 1) * self.accumulation]


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


def evaluate(
    model: Any, rows: Sequence[Row], batch_size: int, pad_id: int, plan: DevicePlan
) -> float | None:
    """Token-weighted mean loss over all label tokens of `rows`."""
    import torch

    if not rows:
        return None
    was_training = model.training
    model.eval()
    device = input_device(model)
    loss_sum, count = 0.0, 0
    with torch.no_grad(), _autocast(plan):
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size], pad_id)
            tokens = _label_tokens(batch)
            if tokens == 0:
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, use_cache=False)
            loss_sum += float(out.loss.float().item()) * tokens
            count += tokens
    if was_training:
        model.train()
    return loss_sum / count if count else None


def make_optimizer(model: Any, hp: Hyperparameters, plan: DevicePlan, total_steps: int) -> Any:
    import torch
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=hp.learning_rate,
        weight_decay=hp.weight_decay,
        fused=plan.device == "cuda",
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
    ) -> None:
        self.model = model
        self.hp = hp
        self.plan = plan
        self.train_rows = list(train_rows)
        self.eval_rows = list(eval_rows)
        self.pad_id = pad_token_id
        self.checkpoint_dir = checkpoint_dir
        self.metric_sink = metric_sink
        self.schedule = Schedule(
            rows=len(self.train_rows),
            batch_size=hp.per_device_train_batch_size,
            accumulation=hp.gradient_accumulation_steps,
            seed=hp.seed,
        )
        self.total_steps = self.schedule.total_steps(hp.epochs, hp.max_steps)
        self.fingerprint = {**fingerprint, "total_steps": self.total_steps}
        self.optimizer, self.scheduler = make_optimizer(model, hp, plan, self.total_steps)

    def _metrics(self, step: int, **values: float | None) -> None:
        _emit(format_metric_line(step, **values))
        known = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
        if self.metric_sink is not None and known:
            self.metric_sink(known, step)

    def _resume(self) -> TrainerState:
        fresh = TrainerState(0, 0.0, 0, 0, 0.0, self.fingerprint)
        if self.checkpoint_dir is None:
            return fresh
        path = checkpoints.latest_complete(self.checkpoint_dir)
        if path is None:
            return fresh
        saved = checkpoints.read_state(path)
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
        state = checkpoints.load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        logger.info("resuming from step %d (%s)", state.global_step, path)
        return state

    def _batches(self, step: int) -> Iterator[tuple[dict[str, Any], int]]:
        """Collated micro-batches of `step` with their real (non-padding) token counts."""
        for indices in self.schedule.micro_batches(step):
            rows = [self.train_rows[i] for i in indices]
            yield collate(rows, self.pad_id), sum(len(r) for r in rows)

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
        self.model.train()
        while step < self.total_steps:
            started = time.perf_counter()
            batches = list(self._batches(step))
            counts = [_label_tokens(b) for b, _ in batches]
            step_labels = sum(counts)
            lr = self.scheduler.get_last_lr()[0]
            for (batch, real_tokens), count in zip(batches, counts, strict=True):
                if count == 0:
                    continue
                window_tokens += real_tokens
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with _autocast(self.plan):
                    out = self.model(**batch, use_cache=False)
                # out.loss is the mean over this micro-batch's label tokens; rescaling by the
                # token share makes the accumulated gradient the mean over the whole step.
                (out.loss * (count / step_labels)).backward()
                window_loss += out.loss.detach().float() * count
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
                window = float(window_loss.item())
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
                loss = evaluate(
                    self.model, self.eval_rows, hp.eval_batch_size, self.pad_id, self.plan
                )
                self._metrics(step, eval_loss=loss, epoch=round(self.schedule.epoch_of(step), 4))
            save_now = hp.save_steps and (step % hp.save_steps == 0 or step == self.total_steps)
            if self.checkpoint_dir is not None and save_now:
                # Counters are flushed at logging steps only; fold the open window in first.
                snapshot = TrainerState(
                    step,
                    loss_sum + float(window_loss.item()),
                    label_total + window_labels,
                    tokens + window_tokens,
                    seconds + window_seconds,
                    self.fingerprint,
                )
                checkpoints.save_checkpoint(
                    self.checkpoint_dir,
                    self.model,
                    self.optimizer,
                    self.scheduler,
                    snapshot,
                    keep=hp.save_total_limit,
                )
            if interrupt_after and step == interrupt_after:
                raise SimulatedInterruptionError(f"simulated interruption after step {step}")

        eval_loss = evaluate(self.model, self.eval_rows, hp.eval_batch_size, self.pad_id, self.plan)
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
