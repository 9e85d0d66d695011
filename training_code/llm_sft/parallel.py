"""Data-parallel engines around the LoRA model: PyTorch's DDP and FSDP2 (`fully_shard`).

- `single`: the model as it is (one process).
- `ddp`: `DistributedDataParallel`; every process holds the whole model. Its construction
  broadcasts rank 0's parameters, so every process starts from the same LoRA initialisation.
- `fsdp`: `fully_shard` on every decoder layer and on the root. Rank 0 alone reads the weights
  (on CPU); the other ranks build the same modules on the meta device, and after sharding rank
  0's full state is broadcast shard by shard (`set_model_state_dict(broadcast_from_rank0=True)`),
  so no process ever holds more than its shard on the GPU or a second full copy in CPU memory.
  With bf16, FSDP gathers weights in bf16 and reduces gradients in float32.

Gradients are averaged over the processes by both engines; the trainer scales each process's
loss so that the average is the token-weighted mean over the whole global batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llm_sft.distributed import DistContext
from llm_sft.errors import ConfigurationError
from llm_sft.hyperparameters import Hyperparameters
from llm_sft.modeling import BaseModel, DevicePlan
from llm_sft.strategy import Strategy

logger = logging.getLogger(__name__)


@dataclass
class Engine:
    """What the trainer drives: `module` runs forward/backward, `model` is the peft model."""

    strategy: Strategy
    module: Any
    model: Any

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    @contextlib.contextmanager
    def gradient_sync(self, sync: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on micro-batches before the step's last one."""
        if self.strategy == "ddp" and not sync:
            with self.module.no_sync():
                yield
            return
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(sync)
        yield


def _decoder_layer_names(model: Any) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(getattr(base, "_no_split_modules", None) or [])


def shard(model: Any, plan: DevicePlan, ctx: DistContext) -> Any:
    """`fully_shard` every decoder layer, then the root (embeddings, norm, head)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    names = _decoder_layer_names(model)
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigurationError(
            f"distributed_strategy=fsdp: {type(model).__name__} names no decoder layer class"
            " (_no_split_modules) to shard; use distributed_strategy=ddp"
        )
    mesh = init_device_mesh(plan.device, (ctx.world_size,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if plan.bf16
        else MixedPrecisionPolicy()
    )
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    logger.info(
        "FSDP: %d %s layers sharded over %d processes", len(layers), sorted(names), ctx.world_size
    )
    return model


def materialize_from_rank0(
    model: Any, full_state: dict[str, Any] | None, plan: DevicePlan, ctx: DistContext
) -> None:
    """Give every rank its shard of rank 0's weights (other ranks start on the meta device)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    device = torch.device(plan.device, plan.local_rank) if plan.device == "cuda" else "cpu"
    if not ctx.is_main:
        model.to_empty(device=device)
    set_model_state_dict(
        model,
        full_state if ctx.is_main and full_state is not None else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    # Buffers that are not in the state dict (rotary inv_freq) were left uninitialised by
    # to_empty: rank 0's are authoritative.
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)
    for module in model.modules():
        if hasattr(module, "original_inv_freq") and hasattr(module, "inv_freq"):
            module.original_inv_freq = module.inv_freq.clone()


def wrap(model: Any, strategy: Strategy, plan: DevicePlan, ctx: DistContext) -> Engine:
    """The engine for `strategy` (`fsdp`: the model must already be sharded and loaded)."""
    if strategy == "single":
        return Engine(strategy, model, model)
    if strategy == "fsdp":
        return Engine(strategy, model, model)
    from torch.nn.parallel import DistributedDataParallel

    module = DistributedDataParallel(
        model, device_ids=[plan.local_rank] if plan.device == "cuda" else None
    )
    return Engine(strategy, module, model)


def trainable_state(engine: Engine, *, to_main_only: bool = True) -> dict[str, Any]:
    """Full (unsharded) trainable parameters by name, on CPU; FSDP gathers them (collective).

    Returns an empty dict on ranks other than 0 when `to_main_only`.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    rank = dist.get_rank() if dist.is_initialized() else 0
    out: dict[str, Any] = {}
    for name, param in engine.model.named_parameters():
        if not param.requires_grad:
            continue
        tensor = param.full_tensor() if isinstance(param, DTensor) else param
        if rank == 0 or not to_main_only:
            out[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return out


def build_engine(
    hp: Hyperparameters, base: BaseModel, plan: DevicePlan, ctx: DistContext, strategy: Strategy
) -> Engine:
    """The base model (FSDP: rank 0's on CPU, a meta skeleton elsewhere), LoRA, then the engine.

    The process group must exist (`distributed.init_process_group`) for `ddp` and `fsdp`.
    """
    from llm_sft.modeling import add_lora, load_base_model, load_model_skeleton

    sharded = strategy == "fsdp"
    if sharded and not ctx.is_main:
        model = load_model_skeleton(base, hp, plan)
    else:
        model = load_base_model(base, hp, plan, on_cpu=sharded)
    model = add_lora(model, hp, plan)
    if sharded:
        full_state = model.state_dict() if ctx.is_main else None
        shard(model, plan, ctx)
        materialize_from_rank0(model, full_state, plan, ctx)
        del full_state
    if ctx.world_size > 1:
        import torch

        # Same LoRA initialisation everywhere (seeded before), then one dropout stream per rank.
        torch.manual_seed(hp.seed + ctx.rank)
    return wrap(model, strategy, plan, ctx)
