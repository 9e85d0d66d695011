"""Training defaults as the training code applies them, for the launch check and the estimate.

Read from the generated contract (``runspec/data/hyperparameters.json``, see runspec.contract):
one source, the training code's own defaults.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "TrainingDefaults",
    "hyperparameter_bounds",
    "hyperparameter_choices",
    "hyperparameter_names",
    "training_defaults",
]


@dataclass(frozen=True)
class TrainingDefaults:
    """The defaults the memory model, the estimate and the run record need."""

    method: str
    epochs: float
    max_steps: int
    max_seq_length: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    lora_r: int
    gradient_checkpointing: str | bool
    merge_adapter: bool
    bf16: str | bool
    distributed_strategy: str
    attn_implementation: str


@functools.cache
def _contract() -> dict[str, Any]:
    text = resources.files("runspec").joinpath("data/hyperparameters.json").read_text()
    return dict(json.loads(text))


def training_defaults() -> TrainingDefaults:
    defaults = _contract()["defaults"]
    return TrainingDefaults(
        **{name: defaults[name] for name in TrainingDefaults.__dataclass_fields__}
    )


def hyperparameter_names() -> tuple[str, ...]:
    return tuple(_contract()["names"])


def hyperparameter_bounds(name: str) -> dict[str, Any]:
    """``name``'s range: ``minimum``/``maximum`` (``exclusive_*`` when strict), ``also``."""
    return dict(_contract()["bounds"][name])


def hyperparameter_choices(name: str) -> tuple[str, ...]:
    return tuple(_contract()["choices"][name])
