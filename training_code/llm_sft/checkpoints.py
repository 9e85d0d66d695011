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
