"""The data-parallel strategy a job will use: the training code's own rule.

The training code applies ``llm_sft.strategy.choose_strategy`` when torchrun started it, and
runs one process otherwise (``llm_sft.training._decide_strategy``). The launch function starts
torchrun exactly when the job has more than one process (``TrainingSetup.distributed``), so:

- one process: ``single``, whatever ``distributed_strategy`` says (the job ignores it);
- otherwise ``choose_strategy`` with the job's world size, the model's parameters and the GPU's
  memory as torch reports it (the catalog's usable memory): ``ddp``, ``fsdp``, or a refusal.

``llm_sft/strategy.py`` is standard library only and ships inside the functions' asset
(``stacks.components.project_function.SHARED_TRAINING_MODULES``), so the rule is written once.
The memory model then says whether the chosen strategy fits; a strategy is never chosen from it
(the job would not follow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llm_sft.strategy import StrategyError, choose_strategy
from runspec.setup import TrainingSetup

__all__ = ["Strategy", "StrategyDecision", "decide_strategy", "strategy_rule"]

Strategy = Literal["single", "ddp", "fsdp"]

GIB = 1024**3


@dataclass(frozen=True)
class StrategyDecision:
    """The strategy, or ``None`` when the training code refuses the combination (``reason``
    says why and what would run)."""

    strategy: Strategy | None
    reason: str

    @property
    def refused(self) -> bool:
        return self.strategy is None


def strategy_rule(
    *,
    requested: str,
    method: str,
    world_size: int,
    parameters: int,
    gpu_memory_bytes: int,
    dtype_bytes: int = 2,
) -> StrategyDecision:
    """``choose_strategy`` for ``world_size`` processes started by torchrun, one per GPU."""
    try:
        choice = choose_strategy(
            requested=requested,
            method=method,
            world_size=world_size,
            parameters=parameters,
            gpu_memory_bytes=gpu_memory_bytes,
            dtype_bytes=dtype_bytes,
        )
    except StrategyError as refusal:
        return StrategyDecision(None, str(refusal))
    return StrategyDecision(choice.strategy, choice.reason)


def decide_strategy(setup: TrainingSetup) -> StrategyDecision:
    """The strategy the job of ``setup`` runs (its instance must have NVIDIA GPUs)."""
    if not setup.distributed:
        return StrategyDecision("single", "one process")
    return strategy_rule(
        requested=setup.distributed_strategy,
        method=setup.method,
        world_size=setup.world_size,
        parameters=setup.model.parameters,
        # What torch reports as the GPU's total memory: the catalog's usable memory.
        gpu_memory_bytes=int(setup.instance.gpu_usable_memory_gib * GIB),
        dtype_bytes=2 if setup.bf16 else 4,
    )
