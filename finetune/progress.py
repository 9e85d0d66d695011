"""Live progress of a run: current state, training step and loss, elapsed time, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llm_sft.metrics import parse_metric_line

__all__ = ["RunProgress"]


@dataclass
class RunProgress:
    """Fed with state changes and the training job's log lines; rendered as one line."""

    total_steps: int | None = None
    epochs: float | None = None
    state: str = "starting"
    step: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    started: float = field(default_factory=time.monotonic)
    training_started: float | None = None
    states_seen: list[str] = field(default_factory=list)

    def enter(self, state: str) -> bool:
        """Record a state; True when it is new."""
        if state == self.state:
            return False
        self.state = state
        self.states_seen.append(state)
        return True

    def on_log_line(self, line: str) -> None:
        record = parse_metric_line(line)
        if record is None:
            return
        if self.training_started is None:
            self.training_started = time.monotonic()
        if record.step is not None:
            self.step = record.step
        values = record.values
        self.epoch = values.get("epoch", self.epoch)
        self.train_loss = values.get("train_loss", self.train_loss)
        self.eval_loss = values.get("eval_loss", self.eval_loss)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta_seconds(self) -> float | None:
        """Remaining training time, from steps (max_steps) or epochs done so far."""
        if self.training_started is None:
            return None
        spent = time.monotonic() - self.training_started
        if self.total_steps and self.step:
            return spent * max(self.total_steps - self.step, 0) / self.step
        if self.epochs and self.epoch:
            return spent * max(self.epochs - self.epoch, 0) / self.epoch
        return None

    def line(self) -> str:
        parts = [f"{self.state}", f"elapsed {_duration(self.elapsed)}"]
        if self.step is not None:
            total = f"/{self.total_steps}" if self.total_steps else ""
            parts.append(f"step {self.step}{total}")
        if self.train_loss is not None:
            parts.append(f"loss {self.train_loss:.4g}")
        if self.eval_loss is not None:
            parts.append(f"eval_loss {self.eval_loss:.4g}")
        eta = self.eta_seconds()
        if eta is not None and self.state == "Train model":
            parts.append(f"ETA {_duration(eta)}")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
