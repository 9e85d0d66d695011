"""The job's place among torchrun's processes, and the few collectives the trainer needs.

SageMaker starts the job through torchrun when the job's hyperparameters enable PyTorch's
distributed launcher (`sagemaker_torch_distributed_enabled`): one process per GPU on every
instance. torchrun gives each process RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE and
the rendezvous address; `DistContext.from_env` reads them without importing torch (the entry
point validates data first). Without torchrun the context is a single process and every
collective below is a no-op, so single-process runs take exactly the code path they always had.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Long enough for rank 0 to merge and save a large model while the others wait at a barrier.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)

_device: str = "cpu"  # where collective tensors live: "cuda" with NCCL, "cpu" with gloo


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launched: bool = False  # started by torchrun (a process group is used, even of one)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistContext:
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return cls()
        world = int(env["WORLD_SIZE"])
        return cls(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
            launched=True,
        )

    @property
    def is_main(self) -> bool:
        """Global rank 0: the one process that prints metrics and writes the job's outputs."""
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    def describe(self) -> str:
        if not self.launched:
            return "one process"
        return f"rank {self.rank} of {self.world_size} ({self.nodes} node(s))"


SINGLE = DistContext()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init_process_group(ctx: DistContext, device: str) -> None:
    """NCCL between GPUs, gloo between CPU processes; each process takes GPU `local_rank`."""
    global _device
    if not ctx.launched or _active():
        return
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    _device = device
    dist.init_process_group(
        backend="nccl" if device == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT
    )


def shutdown() -> None:
    if _active():
        import torch.distributed as dist

        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over all processes (float64, so token counts stay exact)."""
    if not _active():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def all_reduce_max(value: float) -> float:
    if not _active():
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        if _device == "cuda":
            import torch

            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every process."""
    if not _active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any] | None:
    """Every process's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not _active():
        return [value]
    import torch.distributed as dist

    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def scatter_objects(values: list[Any] | None) -> Any:
    """Rank r receives `values[r]` (given on rank 0)."""
    if not _active():
        assert values is not None
        return values[0]
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.scatter_object_list(box, values if dist.get_rank() == 0 else None, src=0)
    return box[0]
