"""The hyperparameter contract of the training job.

Pure standard library on purpose: the launch Lambda validates run requests against
`HYPERPARAMETER_NAMES` and `parse_hyperparameters` without torch in its bundle.

Values arrive in three shapes and all must parse to the same config:
- CLI arguments from the sagemaker-training toolkit: every value a string, booleans as
  `True`/`False`, lists as Python reprs (`['q_proj', 'v_proj']`);
- `SM_HPS` (JSON), where the toolkit has already JSON-decoded what it could (`"1"` -> 1);
- Python values from callers in-process (tests, the local backend).

Over 400 lines as one idea: the hyperparameter contract (names, defaults, bounds, choices
and their parsing) that the launch, the CLI and the job share.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

Method = Literal["lora", "qlora"]
Tristate = Literal["auto"] | bool
DistributedStrategy = Literal["auto", "ddp", "fsdp"]
# Attention implementations that build masks from packed position_ids (see modeling.py).
ATTENTION_CHOICES: tuple[str, ...] = (
    "auto",
    "sdpa",
    "eager",
    "flex_attention",
    "flash_attention_2",
    "flash_attention_3",
)


class HyperparameterError(ValueError):
    """A hyperparameter is unknown or has a value that cannot be used."""


# Added by the toolkit and the SageMaker SDK in script mode: they describe the launch, not training.
_SAGEMAKER_PREFIX = "sagemaker_"


@dataclass(frozen=True)
class Hyperparameters:
    """Parsed, validated training configuration. Field names are the wire names."""

    model_id: str = ""
    method: Method = "lora"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    packing: bool = True
    bf16: Tristate = "auto"
    gradient_checkpointing: Tristate = "auto"
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    validation_split: float = 0.1
    logging_steps: int = 10
    eval_steps: int = 0
    save_steps: int = 100
    save_total_limit: int = 2
    checkpoint_dir: str | None = None
    seed: int = 42
    merge_adapter: bool = True
    trust_remote_code: bool = False
    torch_threads: int = 0
    mlflow_log_model: bool = True
    distributed_strategy: DistributedStrategy = "auto"
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        if self.per_device_eval_batch_size is None:
            object.__setattr__(self, "per_device_eval_batch_size", self.per_device_train_batch_size)

    @property
    def eval_batch_size(self) -> int:
        assert self.per_device_eval_batch_size is not None  # set in __post_init__
        return self.per_device_eval_batch_size

    def to_dict(self) -> dict[str, object]:
        """Plain values for logging (MLflow params, evaluation.json)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


HYPERPARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Hyperparameters))

_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)


def _as_str(name: str, value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | int | float):
        return str(value)
    raise HyperparameterError(f"hyperparameter {name!r}: expected a string, got {value!r}")


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = _as_str(name, value).lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise HyperparameterError(f"hyperparameter {name!r}: expected True or False, got {value!r}")


def _parse_tristate(name: str, value: object) -> Tristate:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return parse_bool(name, value)
    except HyperparameterError:
        raise HyperparameterError(
            f"hyperparameter {name!r}: expected auto, True or False, got {value!r}"
        ) from None


def _parse_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name!r}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = _parse_float(name, value)
    if not number.is_integer():
        raise HyperparameterError(f"hyperparameter {name!r}: expected an integer, got {value!r}")
    return int(number)


def _parse_float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name!r}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(_as_str(name, value))
        except ValueError:
            raise HyperparameterError(
                f"hyperparameter {name!r}: expected a number, got {value!r}"
            ) from None
    if not math.isfinite(number):
        raise HyperparameterError(f"hyperparameter {name!r}: expected a finite number")
    return number


def parse_target_modules(name: str, value: object) -> str | tuple[str, ...]:
    """`all-linear`, a list, its Python repr or JSON, or a comma-separated string."""
    items: object = value
    if isinstance(value, str):
        text = value.strip()
        if text == "all-linear":
            return text
        if text.startswith("["):
            try:
                items = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise HyperparameterError(
                    f"hyperparameter {name!r}: cannot parse list {value!r}"
                ) from None
        else:
            items = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(items, list | tuple) or not items:
        raise HyperparameterError(
            f"hyperparameter {name!r}: expected 'all-linear' or a non-empty list of module names,"
            f" got {value!r}"
        )
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise HyperparameterError(f"hyperparameter {name!r}: module names must be strings")
        names.append(item.strip())
    return tuple(names)


def _choice(options: Sequence[str]) -> Callable[[str, object], str]:
    def parse(name: str, value: object) -> str:
        text = _as_str(name, value)
        if text not in options:
            raise HyperparameterError(
                f"hyperparameter {name!r}: expected one of {', '.join(options)}, got {value!r}"
            )
        return text

    return parse


def _optional_path(name: str, value: object) -> str | None:
    text = _as_str(name, value)
    return text or None


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric hyperparameter (``also``: values allowed outside it)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    also: tuple[float, ...] = ()
    meaning: str = ""

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if self.minimum is not None and (
            value <= self.minimum if self.exclusive_minimum else value < self.minimum
        ):
            return False
        return not (
            self.maximum is not None
            and (value >= self.maximum if self.exclusive_maximum else value > self.maximum)
        )

    def describe(self) -> str:
        low = "" if self.minimum is None else ("> " if self.exclusive_minimum else ">= ")
        high = "" if self.maximum is None else ("< " if self.exclusive_maximum else "<= ")
        parts = [f"{low}{self.minimum:g}" if self.minimum is not None else ""]
        parts.append(f"{high}{self.maximum:g}" if self.maximum is not None else "")
        text = " and ".join(p for p in parts if p)
        if self.also:
            text += f" (or {', '.join(f'{v:g}' for v in self.also)})"
        return text + (f"; {self.meaning}" if self.meaning else "")


#: The one statement of every numeric hyperparameter's range: the training code enforces it, the
#: run request (lambdas/runspec, through the generated contract) validates against it before
#: anything starts, so a request the launch accepts is one the job accepts.
BOUNDS: dict[str, Bound] = {
    "epochs": Bound(0, 100, exclusive_minimum=True),
    "max_steps": Bound(1, 10_000_000, also=(-1,), meaning="-1: train for epochs"),
    "learning_rate": Bound(0, 1, exclusive_minimum=True, exclusive_maximum=True),
    "per_device_train_batch_size": Bound(1, 512),
    "per_device_eval_batch_size": Bound(1, 512),
    "gradient_accumulation_steps": Bound(1, 1024),
    "max_seq_length": Bound(16, 131_072),
    "lora_r": Bound(1, 1024),
    "lora_alpha": Bound(1, 4096),
    "lora_dropout": Bound(0, 1, exclusive_maximum=True),
    "warmup_ratio": Bound(0, 1, exclusive_maximum=True),
    "weight_decay": Bound(0, 1),
    "max_grad_norm": Bound(0, 1000, meaning="0 disables clipping"),
    "validation_split": Bound(0, 0.5, exclusive_maximum=True),
    "logging_steps": Bound(1, 100_000),
    "eval_steps": Bound(0, 10_000_000, meaning="0: evaluate at the end only"),
    "save_steps": Bound(0, 10_000_000, meaning="0: no intermediate checkpoints"),
    "save_total_limit": Bound(1, 100),
    "seed": Bound(0, 2**31 - 1),
    "torch_threads": Bound(0, 1024, meaning="0: library default"),
}
#: The choices of every enumerated hyperparameter (one statement, as BOUNDS).
CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("lora", "qlora"),
    "lr_scheduler_type": _SCHEDULERS,
    "distributed_strategy": ("auto", "ddp", "fsdp"),
    "attn_implementation": ATTENTION_CHOICES,
}


_PARSERS: dict[str, Callable[[str, object], object]] = {
    "model_id": _as_str,
    "method": _choice(CHOICES["method"]),
    "epochs": _parse_float,
    "max_steps": _parse_int,
    "learning_rate": _parse_float,
    "per_device_train_batch_size": _parse_int,
    "per_device_eval_batch_size": _parse_int,
    "gradient_accumulation_steps": _parse_int,
    "max_seq_length": _parse_int,
    "lora_r": _parse_int,
    "lora_alpha": _parse_int,
    "lora_dropout": _parse_float,
    "lora_target_modules": parse_target_modules,
    "packing": parse_bool,
    "bf16": _parse_tristate,
    "gradient_checkpointing": _parse_tristate,
    "warmup_ratio": _parse_float,
    "lr_scheduler_type": _choice(CHOICES["lr_scheduler_type"]),
    "weight_decay": _parse_float,
    "max_grad_norm": _parse_float,
    "validation_split": _parse_float,
    "logging_steps": _parse_int,
    "eval_steps": _parse_int,
    "save_steps": _parse_int,
    "save_total_limit": _parse_int,
    "checkpoint_dir": _optional_path,
    "seed": _parse_int,
    "merge_adapter": parse_bool,
    "trust_remote_code": parse_bool,
    "torch_threads": _parse_int,
    "mlflow_log_model": parse_bool,
    "distributed_strategy": _choice(CHOICES["distributed_strategy"]),
    "attn_implementation": _choice(CHOICES["attn_implementation"]),
}
assert set(_PARSERS) == set(HYPERPARAMETER_NAMES)


def _check_ranges(hp: Hyperparameters) -> None:
    # model_id may be empty when a `model` channel is given: resolve_base_model decides.
    for name, bound in BOUNDS.items():
        value = getattr(hp, name)
        if value is not None and not bound.holds(value):
            raise HyperparameterError(f"hyperparameter {name!r} must be {bound.describe()}")


def parse_hyperparameters(raw: Mapping[str, object]) -> Hyperparameters:
    """Validate and convert raw hyperparameters; unknown names are an error.

    `sagemaker_*` names (added by the toolkit and SDK in script mode) are ignored.
    """
    values: dict[str, object] = {}
    unknown: list[str] = []
    for name, value in raw.items():
        if name.startswith(_SAGEMAKER_PREFIX):
            continue
        parser = _PARSERS.get(name)
        if parser is None:
            unknown.append(name)
            continue
        values[name] = parser(name, value)
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter(s): {', '.join(sorted(unknown))}."
            f" Accepted: {', '.join(HYPERPARAMETER_NAMES)}"
        )
    hp = Hyperparameters(**values)  # type: ignore[arg-type]
    _check_ranges(hp)
    return hp


def split_cli_args(argv: Sequence[str]) -> dict[str, str]:
    """`--key value` / `--key=value` pairs as the toolkit passes them, in order."""
    out: dict[str, str] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or len(token) == 2:
            raise HyperparameterError(f"unexpected command-line argument {token!r}")
        key, sep, inline = token[2:].partition("=")
        if sep:
            value = inline
            index += 1
        else:
            if index + 1 >= len(argv):
                raise HyperparameterError(f"argument --{key} has no value")
            value = argv[index + 1]
            index += 2
        out[key.replace("-", "_")] = value
    return out


def hyperparameters_from_sm_hps(text: str | None) -> dict[str, object]:
    """The toolkit's `SM_HPS` JSON, or an empty mapping."""
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        raise HyperparameterError("SM_HPS is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise HyperparameterError("SM_HPS must be a JSON object")
    return {str(k): v for k, v in decoded.items()}


def to_sagemaker_strings(values: Mapping[str, object]) -> dict[str, str]:
    """Hyperparameters as SageMaker stores them: every value a string, Python-style reprs.

    This is what CreateTrainingJob accepts and what `hyperparameters.json` contains.
    """
    out: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, list | tuple):
            out[name] = repr([str(v) for v in value])
        else:
            out[name] = str(value)
    return out
