"""Resumable checkpoints for managed spot training.

SageMaker syncs the checkpoint folder to S3 while the job runs and copies it back when a
restarted job starts, so a checkpoint may be half-written (job killed while saving) or
half-synced. Each `checkpoint-<step>/` therefore ends with `COMPLETE.json`, written last, that
lists every file and its size; only checkpoints whose files all match are resumed from.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class TrainerState:
    """Progress counters that make a resumed run report the same totals as an unbroken one."""

    global_step: int
    loss_sum: float  # token-weighted sum of training losses
    label_tokens: int
    tokens: int  # input tokens processed (not padding)
    train_seconds: float
    fingerprint: dict[str, object]


def _step_of(path: Path) -> int | None:
    suffix = path.name.removeprefix(PREFIX)
    return int(suffix) if path.name.startswith(PREFIX) and suffix.isdigit() else None


def is_complete(path: Path) -> bool:
    marker = path / MARKER
    try:
        listing = json.loads(marker.read_text())
        return all(
            (path / name).is_file() and (path / name).stat().st_size == size
            for name, size in listing["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """All `checkpoint-<step>` folders, oldest first (complete or not)."""
    if not directory.is_dir():
        return []
    found = [(_step_of(p), p) for p in directory.iterdir() if p.is_dir()]
    return sorted((step, p) for step, p in found if step is not None)


def latest_complete(directory: Path) -> Path | None:
    for _step, path in reversed(list_checkpoints(directory)):
        if is_complete(path):
            return path
        logger.warning("ignoring incomplete checkpoint %s", path)
    return None


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: TrainerState,
    keep: int,
) -> Path:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = directory / f"{PREFIX}{state.global_step}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    adapter = {
        k: v.detach().contiguous().cpu()
        for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
    }
    save_file(adapter, str(target / ADAPTER_FILE))
    torch.save(optimizer.state_dict(), target / "optimizer.pt")
    torch.save(scheduler.state_dict(), target / "scheduler.pt")
    torch.save(_rng_state(), target / "rng_state.pt")
    (target / STATE_FILE).write_text(json.dumps(state.__dict__, indent=2, sort_keys=True))
    files = {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file()}
    (target / MARKER).write_text(json.dumps({"step": state.global_step, "files": files}))
    logger.info("saved checkpoint %s", target)
    _rotate(directory, keep)
    return target


def _rotate(directory: Path, keep: int) -> None:
    checkpoints = list_checkpoints(directory)
    complete = [(s, p) for s, p in checkpoints if is_complete(p)]
    newest = complete[-1][0] if complete else None
    stale = complete[:-keep] if keep > 0 else []
    # Incomplete folders older than the newest complete one are leftovers of a killed save.
    stale += [
        (s, p) for s, p in checkpoints if newest is not None and s < newest and not is_complete(p)
    ]
    for _step, path in stale:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> TrainerState:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = model.get_input_embeddings().weight.device
    result = set_peft_model_state_dict(
        model, load_file(str(path / ADAPTER_FILE), device=str(device))
    )
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"checkpoint {path} has unexpected adapter keys: {unexpected[:3]}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
    # RNG state holds Python tuples and tensors only, written by this module.
    _set_rng_state(torch.load(path / "rng_state.pt", weights_only=False))
    raw = json.loads((path / STATE_FILE).read_text())
    return TrainerState(**raw)


def read_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text()))


# --- Under torchrun (DDP / FSDP) --------------------------------------------------------------
# The files are the same as above except `optimizer.pt`, which holds the full optimizer state
# keyed by parameter name (`torch.distributed.checkpoint.state_dict`), and `rng_state.pt`,
# which holds one RNG state per process. Rank 0 gathers, writes and prunes; on resume rank 0
# picks the checkpoint and reads it, and the others receive what they need from it, so the
# other instances of a multi-instance job need no copy of the checkpoint folder.

RANK_RNG_KEY = "ranks"


def find_resumable(directory: Path, ctx: Any) -> tuple[Path, TrainerState] | None:
    """Rank 0's newest complete checkpoint and its state, on every process."""
    from llm_sft.distributed import broadcast_object

    found: tuple[str, dict[str, Any]] | None = None
    if ctx.is_main:
        path = latest_complete(directory)
        if path is not None:
            found = (str(path), read_state(path).__dict__)
    found = broadcast_object(found)
    if found is None:
        return None
    return Path(found[0]), TrainerState(**found[1])


def _state_options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def save_distributed(
    directory: Path,
    engine: Any,
    optimizer: Any,
    scheduler: Any,
    state: TrainerState,
    keep: int,
    ctx: Any,
) -> Path:
    """Collective: every process calls it; rank 0 writes `checkpoint-<step>/`."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from llm_sft.distributed import barrier, gather_objects
    from llm_sft.parallel import trainable_state

    adapter_full = trainable_state(engine)
    optimizer_state = get_optimizer_state_dict(
        engine.model, optimizer, options=_state_options(cpu_offload=True)
    )
    rng_states = gather_objects(_rng_state())
    target = directory / f"{PREFIX}{state.global_step}"
    if ctx.is_main:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        adapter = get_peft_model_state_dict(
            engine.model, state_dict=adapter_full, save_embedding_layers=False
        )
        save_file({k: v.contiguous() for k, v in adapter.items()}, str(target / ADAPTER_FILE))
        torch.save(optimizer_state, target / "optimizer.pt")
        torch.save(scheduler.state_dict(), target / "scheduler.pt")
        torch.save({RANK_RNG_KEY: rng_states}, target / "rng_state.pt")
        (target / STATE_FILE).write_text(json.dumps(state.__dict__, indent=2, sort_keys=True))
        files = {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file()}
        (target / MARKER).write_text(json.dumps({"step": state.global_step, "files": files}))
        logger.info("saved checkpoint %s", target)
        _rotate(directory, keep)
    barrier()
    return target


def _adapter_names(model: Any) -> dict[str, str]:
    """peft's saved key -> the model's parameter name, for every trainable parameter.

    `get_peft_model_state_dict` drops the adapter name (`.default`) from the keys.
    """
    names: dict[str, str] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            names[name.replace(".default", "")] = name
    return names


def load_distributed(
    path: Path, saved: TrainerState, engine: Any, optimizer: Any, scheduler: Any, ctx: Any
) -> TrainerState:
    """Collective: rank 0 reads `path`; every process gets the adapter, optimizer, scheduler
    and its own RNG state."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from llm_sft.distributed import broadcast_object, scatter_objects

    model = engine.model
    adapter: dict[str, Any] = {}
    optimizer_state: dict[str, Any] = {}
    scheduler_state: Any = None
    rng_states: list[Any] | None = None
    if ctx.is_main:
        names = _adapter_names(model)
        stored = load_file(str(path / ADAPTER_FILE))
        unexpected = sorted(set(stored) - set(names))
        if unexpected:
            raise RuntimeError(f"checkpoint {path} has unexpected adapter keys: {unexpected[:3]}")
        adapter = {names[k]: v for k, v in stored.items()}
        optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu")
        scheduler_state = torch.load(path / "scheduler.pt")
        # RNG state holds Python tuples and tensors only, written by this module.
        rng_states = torch.load(path / "rng_state.pt", weights_only=False)[RANK_RNG_KEY]
    set_model_state_dict(
        model, adapter, options=_state_options(broadcast_from_rank0=True, strict=False)
    )
    set_optimizer_state_dict(
        model, optimizer, optimizer_state, options=_state_options(broadcast_from_rank0=True)
    )
    scheduler.load_state_dict(broadcast_object(scheduler_state))
    # One state per process: the fingerprint pins the world size.
    _set_rng_state(scatter_objects(rng_states))
    return saved
