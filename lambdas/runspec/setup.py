"""The training setup of a run request: built once, from the request, the platform's limits and
the training code's defaults, and given to the estimator by the launch function and the CLI.

A request leaves most values unset; the setup fills them with the training code's defaults
(``runspec.defaults``, generated from the training code) and the platform's (default instance
type, allow-list, most instances per job), resolves the base model's shape and the instance from
the catalog, and applies the rules the training code applies on a GPU instance
(``gradient_checkpointing: auto`` is on, ``bf16: auto`` is on: every catalogued training GPU
computes bf16). Its field names are the training code's hyperparameter names, so a suggestion
that changes a field is said in request terms by prefixing its section (:data:`REQUEST_FIELDS`).

How many processes a job runs (``world_size``: one per GPU, on every instance) and whether the
launch function has SageMaker start them through torchrun (:attr:`TrainingSetup.distributed`)
are decided here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from annotated_types import Le

from runspec.catalog import (
    InstanceSpec,
    ModelShape,
    UnknownInstanceType,
    get_instance,
    resolve_model_shape,
)
from runspec.defaults import training_defaults
from runspec.request import RunRequest, Training
from runspec.settings import PlatformSettings

__all__ = [
    "DISTRIBUTED_HYPERPARAMETERS",
    "MAX_INSTANCE_COUNT",
    "REQUEST_FIELDS",
    "Field",
    "Method",
    "PlatformLimits",
    "RequestedStrategy",
    "SetupError",
    "TrainingSetup",
    "world_size",
]

#: The contract's choices (the request schema checks them; a test checks these types name them).
Method = Literal["lora", "qlora"]
RequestedStrategy = Literal["auto", "ddp", "fsdp"]
#: The fields of a setup a suggestion may change.
Field = Literal[
    "method",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "max_seq_length",
    "distributed_strategy",
    "instance_type",
    "instance_count",
]
#: Where each of them is in a run request.
REQUEST_FIELDS: Mapping[Field, str] = {
    name: f"{'training' if name.startswith('instance_') else 'hyperparameters'}.{name}"
    for name in get_args(Field)
}

#: The most instances a request may ask for (the run request schema's bound); a platform's own
#: maximum (``max_training_instances``) is at most this.
MAX_INSTANCE_COUNT: int = next(
    cast(int, rule.le)
    for rule in Training.model_fields["instance_count"].metadata
    if isinstance(rule, Le)
)

#: What the SageMaker Python SDK's ``distribution={"torch_distributed": {"enabled": True}}`` adds
#: to a job: the toolkit's PyTorch framework module then starts the script through torchrun, one
#: process per GPU on every instance. Sent only when it is true: the toolkit reads the value as a
#: string, and "False" is a true string.
DISTRIBUTED_HYPERPARAMETERS: Mapping[str, str] = {"sagemaker_torch_distributed_enabled": "true"}


class SetupError(ValueError):
    """The request cannot be set up; ``problems`` holds one ``field: rule`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, kw_only=True)
class PlatformLimits:
    """What the platform decides about training: the default and allowed instance types, the
    most instances one job may use, and the region (prices)."""

    default_instance_type: str
    allowed_instance_types: tuple[str, ...]
    max_instances: int
    region: str

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> PlatformLimits:
        return cls(
            default_instance_type=settings.default_training_instance_type,
            allowed_instance_types=settings.allowed_training_instance_types,
            max_instances=settings.max_training_instances,
            region=settings.region,
        )


def world_size(instance: InstanceSpec, instance_count: int) -> int:
    """Processes of a job: one per GPU on every instance (one per instance without GPUs)."""
    return max(instance.gpus if instance.has_nvidia_gpu else 1, 1) * instance_count


@dataclass(frozen=True, kw_only=True)
class TrainingSetup:
    """Everything the estimate needs about one run, with every default applied."""

    model: ModelShape
    instance: InstanceSpec
    instance_count: int
    spot: bool
    method: Method
    max_seq_length: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    lora_r: int
    gradient_checkpointing: bool
    #: bf16 weights and activations (False: float32, twice the bytes).
    bf16: bool
    distributed_strategy: RequestedStrategy
    attn_implementation: str
    #: None: the run is as long as ``epochs`` over the data.
    max_steps: int | None
    epochs: float
    platform: PlatformLimits

    @classmethod
    def from_request(cls, request: RunRequest, platform: PlatformLimits) -> TrainingSetup:
        """The setup of ``request`` on ``platform``; SetupError names the request's fields."""
        hp = request.hyperparameters
        defaults = training_defaults()
        problems: list[str] = []
        try:
            model = resolve_model_shape(request.base_model, request.model_parameters_billions)
        except ValueError as error:
            problems.append(f"model_parameters_billions: {error}")
        instance_type = request.training.instance_type or platform.default_instance_type
        try:
            instance = get_instance(instance_type, field=REQUEST_FIELDS["instance_type"])
        except UnknownInstanceType as error:
            problems.append(str(error))
        if problems:
            raise SetupError(problems)
        max_steps = hp.max_steps if hp.max_steps is not None else defaults.max_steps
        return cls(
            model=model,
            instance=instance,
            instance_count=request.training.instance_count,
            spot=request.training.spot,
            method=cast(Method, hp.method or defaults.method),
            max_seq_length=hp.max_seq_length or defaults.max_seq_length,
            per_device_train_batch_size=(
                hp.per_device_train_batch_size or defaults.per_device_train_batch_size
            ),
            gradient_accumulation_steps=(
                hp.gradient_accumulation_steps or defaults.gradient_accumulation_steps
            ),
            lora_r=hp.lora_r or defaults.lora_r,
            # "auto" is on with a GPU: the training code's rule (modeling.plan_device).
            gradient_checkpointing=_on_gpu(hp.gradient_checkpointing, defaults),
            bf16=_on_gpu(hp.bf16, defaults, name="bf16"),
            distributed_strategy=cast(
                RequestedStrategy, hp.distributed_strategy or defaults.distributed_strategy
            ),
            attn_implementation=hp.attn_implementation or defaults.attn_implementation,
            max_steps=max_steps if max_steps > 0 else None,
            epochs=hp.epochs if hp.epochs is not None else defaults.epochs,
            platform=platform,
        )

    @property
    def instance_type(self) -> str:
        return self.instance.name

    @property
    def world_size(self) -> int:
        return world_size(self.instance, self.instance_count)

    @property
    def distributed(self) -> bool:
        """The job runs several processes: the launch function asks SageMaker for torchrun
        (:data:`DISTRIBUTED_HYPERPARAMETERS`)."""
        return self.world_size > 1

    @property
    def rows_per_step(self) -> int:
        """The global batch: rows per optimizer step over every process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size

    def with_changes(self, **changes: Any) -> TrainingSetup:
        """A copy with some fields changed; ``instance_type`` (a name) is looked up."""
        if "instance_type" in changes:
            changes["instance"] = get_instance(changes.pop("instance_type"))
        return dataclasses.replace(self, **changes)

    def limit_problems(self) -> list[str]:
        """The platform's limits this setup breaks, one ``field: rule`` line each."""
        problems: list[str] = []
        allowed = self.platform.allowed_instance_types
        if self.instance_type not in allowed:
            problems.append(
                f"{REQUEST_FIELDS['instance_type']}: {self.instance_type!r} is not allowed on "
                f"this platform; allowed: {', '.join(allowed)}"
            )
        if self.instance_count > self.platform.max_instances:
            problems.append(
                f"{REQUEST_FIELDS['instance_count']}: {self.instance_count} instances are more "
                f"than this platform allows for one job ({self.platform.max_instances}; "
                "max_training_instances in its configuration)"
            )
        return problems


def _on_gpu(
    value: str | bool | None, defaults: Any, *, name: str = "gradient_checkpointing"
) -> bool:
    chosen = getattr(defaults, name) if value is None else value
    return True if chosen == "auto" else bool(chosen)
