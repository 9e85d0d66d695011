"""The data-parallel strategy a job will use, decided as the training code decides it.

The training code applies ``llm_sft.strategy.choose_strategy`` when torchrun started it, and
runs one process otherwise (``llm_sft.training._decide_strategy``). The launch function starts
torchrun exactly when the job has more than one process (``TrainingSetup.distributed``), so:

- one process: ``single``, whatever ``distributed_strategy`` says (the job ignores it);
- ``distributed_strategy`` ``ddp`` or ``fsdp``: that strategy (``fsdp`` with QLoRA is refused);
- ``auto``: ``ddp`` when the frozen weights take at most half of one GPU, else ``fsdp`` for
  LoRA; QLoRA cannot be sharded, so a QLoRA model over that share is refused.

The training code ships in the training image, not with the launch function, so the rule is
written here too: ``tests/lambdas/test_estimate.py`` checks that both decide the same on a grid
of methods, model sizes, GPU sizes, world sizes and requests. The memory model then says whether
the chosen strategy fits; a strategy is never chosen from it (the job would not follow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runspec.setup import TrainingSetup

__all__ = ["Strategy", "StrategyDecision", "decide_strategy", "strategy_rule"]

Strategy = Literal["single", "ddp", "fsdp"]

GIB = 1024**3
# The training code's constants (llm_sft.strategy; the grid test keeps them equal).
_DDP_WEIGHT_SHARE = 0.5
_QLORA_BYTES_PER_PARAMETER = 0.55


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
    per_parameter = _QLORA_BYTES_PER_PARAMETER if method == "qlora" else float(dtype_bytes)
    weights = parameters * per_parameter
    need = f"{weights / GIB:.1f} GiB of {'4-bit' if method == 'qlora' else 'frozen'} weights"
    if requested == "fsdp" and method == "qlora":
        return StrategyDecision(
            None,
            "fsdp does not shard QLoRA's 4-bit weights: ddp runs QLoRA with the model on every"
            " GPU, or method lora with fsdp shards it",
        )
    if requested != "auto":
        return StrategyDecision("ddp" if requested == "ddp" else "fsdp", f"{requested} requested")
    budget = _DDP_WEIGHT_SHARE * gpu_memory_bytes
    gpu = f"{gpu_memory_bytes / GIB:.1f} GiB GPU"
    if weights <= budget:
        return StrategyDecision("ddp", f"{need} take at most half of a {gpu}")
    if method == "qlora":
        return StrategyDecision(
            None,
            f"QLoRA needs {need} on every GPU, more than half of a {gpu}, and cannot be sharded:"
            " method lora shards the model (fsdp), or a larger GPU replicates it",
        )
    return StrategyDecision(
        "fsdp", f"{need} exceed half of a {gpu}: sharded over {world_size} GPUs"
    )


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
