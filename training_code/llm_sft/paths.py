"""Where the job reads and writes: the SageMaker `/opt/ml` contract, with laptop fallbacks.

Precedence for each location: a `--<name>` command-line option (laptops), then the SageMaker
environment variable, then the standard folder under the base directory. The base directory is
`SAGEMAKER_BASE_DIR` when set, else `/opt/ml` when it exists (SageMaker), else `./opt-ml`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Command-line options that are locations, not hyperparameters, and their environment names.
PATH_OPTIONS: dict[str, str] = {
    "train_dir": "SM_CHANNEL_TRAIN",
    "validation_dir": "SM_CHANNEL_VALIDATION",
    "model_channel_dir": "SM_CHANNEL_MODEL",
    "model_dir": "SM_MODEL_DIR",
    "output_data_dir": "SM_OUTPUT_DATA_DIR",
    "output_dir": "SM_OUTPUT_DIR",
}
CHECKPOINT_ENV = "SM_CHECKPOINT_DIR"


@dataclass(frozen=True)
class JobPaths:
    train: Path
    validation: Path | None  # None: split `validation_split` off the training rows
    model_channel: Path | None  # a staged base model; wins over model_id
    model_dir: Path
    output_data_dir: Path
    output_dir: Path  # holds the `failure` file
    checkpoint_dir: Path


def base_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("SAGEMAKER_BASE_DIR"):
        return Path(environ["SAGEMAKER_BASE_DIR"])
    return Path("/opt/ml") if Path("/opt/ml").is_dir() else Path("opt-ml").absolute()


def _pick(name: str, options: Mapping[str, str], environ: Mapping[str, str]) -> Path | None:
    value = options.get(name) or environ.get(PATH_OPTIONS[name])
    return Path(value) if value else None


def failure_dir(options: Mapping[str, str], environ: Mapping[str, str]) -> Path:
    """Resolvable before hyperparameters parse, so that their errors reach FailureReason."""
    return _pick("output_dir", options, environ) or base_dir(environ) / "output"


def resolve_paths(
    options: Mapping[str, str], environ: Mapping[str, str], checkpoint_dir: str | None
) -> JobPaths:
    base = base_dir(environ)
    channels = base / "input" / "data"

    def channel(name: str, option: str) -> Path | None:
        explicit = _pick(option, options, environ)
        if explicit is not None:
            return explicit
        default = channels / name
        return default if default.is_dir() else None

    checkpoints = checkpoint_dir or environ.get(CHECKPOINT_ENV) or str(base / "checkpoints")
    return JobPaths(
        train=_pick("train_dir", options, environ) or channels / "train",
        validation=channel("validation", "validation_dir"),
        model_channel=channel("model", "model_channel_dir"),
        model_dir=_pick("model_dir", options, environ) or base / "model",
        output_data_dir=_pick("output_data_dir", options, environ) or base / "output" / "data",
        output_dir=failure_dir(options, environ),
        checkpoint_dir=Path(checkpoints),
    )


def require_torchrun_for_hosts(environ: Mapping[str, str], launched: bool) -> None:
    """Several instances train one model only as torchrun's processes; started otherwise, each
    instance would train the same model in full on its own."""
    from llm_sft.errors import ConfigurationError

    try:
        hosts = json.loads(environ.get("SM_HOSTS") or "[]")
    except ValueError:
        hosts = []
    if isinstance(hosts, list) and len(hosts) > 1 and not launched:
        raise ConfigurationError(
            f"the job has {len(hosts)} instances but was not started by torchrun: set the"
            " hyperparameter sagemaker_torch_distributed_enabled=true (SageMaker's PyTorch"
            " distributed launcher), or use an instance count of 1"
        )
