"""Which data-parallel strategy a job uses: a pure function of model size, GPU memory and method.

Standard library only, so that the launch side (the run estimate) can call the same rule the
job applies. The job calls it with the model's parameter count and its GPU's memory; the launch
function may instead decide with its fuller memory model and pass `distributed_strategy`
explicitly, which the job then obeys.

- `single`: one process (no torchrun, or torchrun with one process and `auto`): no wrapper.
- `ddp`: every process holds the whole (frozen) model; gradients of the LoRA weights are
  all-reduced. Fastest when the model fits one GPU with room for activations.
- `fsdp`: PyTorch's `fully_shard` (FSDP2) shards every decoder layer's weights over the
  processes and gathers them layer by layer; for LoRA on models that don't fit one GPU.
  QLoRA's 4-bit bitsandbytes weights are not sharded by `fully_shard`: QLoRA runs with `ddp`
  (the 4-bit model on every GPU) or is refused, naming the alternative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strategy = Literal["single", "ddp", "fsdp"]

# DDP when the frozen weights take at most this share of one GPU's memory; the rest holds the
# activations of large packed micro-batches, the logits, the LoRA optimizer state and the CUDA
# context. The run estimate's memory model is finer; this is the job's fallback rule.
DDP_WEIGHT_SHARE = 0.5
# bitsandbytes NF4 with double quantization: 4 bits per weight plus scales, ~0.55 bytes.
QLORA_BYTES_PER_PARAMETER = 0.55

GIB = 1024**3


class StrategyError(ValueError):
    """The requested strategy cannot run this configuration; the message names the alternative."""


@dataclass(frozen=True)
class StrategyChoice:
    strategy: Strategy
    reason: str


def weight_bytes(parameters: int, method: str, dtype_bytes: int = 2) -> float:
    """Bytes of the frozen base weights on one GPU when nothing is sharded."""
    per_parameter = QLORA_BYTES_PER_PARAMETER if method == "qlora" else float(dtype_bytes)
    return parameters * per_parameter


def choose_strategy(
    *,
    requested: str,
    method: str,
    world_size: int,
    parameters: int,
    gpu_memory_bytes: int | None,
    dtype_bytes: int = 2,
) -> StrategyChoice:
    """The strategy for `world_size` processes (one per GPU; `gpu_memory_bytes` None on CPU).

    `requested` is the `distributed_strategy` hyperparameter: `auto`, `ddp` or `fsdp`.
    Raises StrategyError when the combination cannot run.
    """
    if requested not in ("auto", "ddp", "fsdp"):
        raise StrategyError(f"unknown distributed_strategy {requested!r}: use auto, ddp or fsdp")
    if world_size < 1:
        raise StrategyError(f"world size must be >= 1, got {world_size}")
    if requested == "fsdp" and method == "qlora":
        raise StrategyError(
            "distributed_strategy=fsdp does not compose with method=qlora (fully_shard does not"
            " shard 4-bit bitsandbytes weights): use distributed_strategy=ddp to run QLoRA with"
            " the 4-bit model on every GPU, or method=lora with distributed_strategy=fsdp to"
            " shard a model that does not fit one GPU"
        )
    weights = weight_bytes(parameters, method, dtype_bytes)
    need = f"{weights / GIB:.1f} GiB of {'4-bit' if method == 'qlora' else 'frozen'} weights"
    if requested != "auto":
        forced: Strategy = "ddp" if requested == "ddp" else "fsdp"
        return StrategyChoice(forced, f"distributed_strategy={requested} requested ({need})")
    if world_size == 1:
        return StrategyChoice("single", "one process")
    if gpu_memory_bytes is None:
        return StrategyChoice("ddp", f"{world_size} CPU processes, each with the whole model")
    budget = DDP_WEIGHT_SHARE * gpu_memory_bytes
    gpu = f"{gpu_memory_bytes / GIB:.1f} GiB GPUs"
    if weights <= budget:
        return StrategyChoice("ddp", f"{need} fit one of the {gpu} (at most half of it)")
    if method == "qlora":
        raise StrategyError(
            f"method=qlora needs {need} on every GPU, more than half of one of the {gpu}, and"
            " QLoRA cannot be sharded: use method=lora (distributed_strategy auto or fsdp shards"
            f" the model over the {world_size} GPUs), or a larger GPU"
        )
    shard = weights / world_size
    return StrategyChoice(
        "fsdp",
        f"{need} exceed half of one of the {gpu}: sharded over {world_size} GPUs"
        f" ({shard / GIB:.1f} GiB each)",
    )
