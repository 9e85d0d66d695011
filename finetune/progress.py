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
    #: The first metric line seen (when, at which step and epoch): the ETA is the pace since
    #: then, never the time before the first step (model download, data loading).
    first_seen: tuple[float, int | None, float | None] | None = None
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
        if record.step is not None:
            self.step = record.step
        values = record.values
        self.epoch = values.get("epoch", self.epoch)
        if self.first_seen is None:
            self.first_seen = (time.monotonic(), self.step, self.epoch)
        self.train_loss = values.get("train_loss", self.train_loss)
        self.eval_loss = values.get("eval_loss", self.eval_loss)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta_seconds(self) -> float | None:
        """Remaining training time at the pace observed since the first metric line; unknown
        until the run has progressed past it (an ETA from one point would read 0m00s)."""
        if self.first_seen is None:
            return None
        since, first_step, first_epoch = self.first_seen
        spent = time.monotonic() - since
        if self.total_steps and self.step and first_step is not None and self.step > first_step:
            pace = spent / (self.step - first_step)
            return pace * max(self.total_steps - self.step, 0)
        if self.epochs and self.epoch and first_epoch is not None and self.epoch > first_epoch:
            pace = spent / (self.epoch - first_epoch)
            return pace * max(self.epochs - self.epoch, 0)
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
