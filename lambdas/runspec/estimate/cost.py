"""Training time and cost: how much work a run is, how fast N GPUs do it, what it costs.

Work
----
Training FLOPs = ``4 * N_active * tokens`` for LoRA and QLoRA: forward ``2N``, backward ``2N``
for the activation gradients, none for the frozen weights (Kaplan et al. 2020 count ``6N`` when
every weight trains); adapter FLOPs are negligible. QLoRA is multiplied by 1.3 for dequantizing
the 4-bit weights in every forward and backward (an assumption; reported slowdowns of
bitsandbytes QLoRA against bf16 LoRA are 20-40%). A run is a number of tokens (epochs over the
data: the same whatever the GPU count) or a number of optimizer steps (``max_steps``: each step
is ``per_device_train_batch_size x gradient_accumulation_steps x world size`` packed rows, so
more GPUs train on more tokens in the same steps).

Speed
-----
One GPU trains at ``bf16 dense peak x MFU`` (``mfu``, 0.35 by default: a well-tuned bf16 run;
it folds in recomputation for gradient checkpointing, padding and data loading). ``W`` GPUs
train ``W x efficiency`` times as fast (:func:`speedup`). The efficiencies are assumptions,
not measurements (calibrate them with ``make bench-train-gpu``, which measures 1 GPU, DDP and
FSDP on one instance):

=========  ====================  ====================  ========================================
strategy   on one instance       over instances        why
=========  ====================  ====================  ========================================
``ddp``    0.95                  0.90                  all-reduce of the LoRA gradients only
                                                       (~0.5% of the weights), overlapped with
                                                       the backward pass
``fsdp``   0.85                  0.75                  every micro-batch all-gathers the
                                                       weights for forward and again for
                                                       backward; prefetching hides most of it
                                                       on NVLink, less over PCIe and the network
=========  ====================  ====================  ========================================

Cost
----
Billable hours = training hours + a fixed per-job overhead (image pull, model download, upload:
SageMaker bills from the "Downloading" phase; 0.25 h by default), times the instance count, at
the catalog's on-demand price, less its assumed spot discount for managed spot training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runspec.catalog import InstanceSpec, ModelShape, get_catalog, get_instance
from runspec.estimate._data import rounded
from runspec.estimate.strategy import Strategy
from runspec.setup import TrainingSetup

__all__ = [
    "DEFAULT_MFU",
    "DEFAULT_OVERHEAD_HOURS",
    "SCALING_ASSUMPTION",
    "CostEstimate",
    "Speedup",
    "Workload",
    "estimate_cost",
    "hourly_price",
    "speedup",
    "tokens_from_dataset",
    "tokens_from_steps",
    "training_hours",
]

DEFAULT_MFU = 0.35
DEFAULT_OVERHEAD_HOURS = 0.25
_FLOPS_PER_PARAMETER_TOKEN = 4.0
_QLORA_DEQUANT_FACTOR = 1.3
#: Per-GPU efficiency of data-parallel training: (strategy, several instances) -> efficiency.
_EFFICIENCY: dict[tuple[Strategy, bool], float] = {
    ("single", False): 1.0,
    ("ddp", False): 0.95,
    ("ddp", True): 0.90,
    ("fsdp", False): 0.85,
    ("fsdp", True): 0.75,
}
#: The scaling assumption, in one line.
SCALING_ASSUMPTION = (
    f"speed-up: N GPUs on one instance train N x {_EFFICIENCY[('ddp', False)]:g} (DDP) or "
    f"N x {_EFFICIENCY[('fsdp', False)]:g} (FSDP) as fast as one GPU, over several instances "
    f"N x {_EFFICIENCY[('ddp', True)]:g} and N x {_EFFICIENCY[('fsdp', True)]:g} (assumptions: "
    "runspec.estimate.cost)"
)


@dataclass(frozen=True)
class Speedup:
    """Throughput of the job's ``world_size`` GPUs relative to one GPU of the same type."""

    strategy: Strategy
    world_size: int
    efficiency: float
    factor: float


def speedup(strategy: Strategy, world_size: int, instance_count: int) -> Speedup:
    """``world_size x efficiency`` (the efficiencies: the module docstring)."""
    efficiency = _EFFICIENCY[(strategy, instance_count > 1)]
    return Speedup(strategy, world_size, efficiency, world_size * efficiency)


@dataclass(frozen=True)
class Workload:
    """How long a run is: ``tokens`` in all (epochs over the data), or ``steps`` optimizer
    steps (tokens then grow with the world size). ``basis`` says where the figure came from."""

    basis: str
    tokens: int | None = None
    steps: int | None = None

    def tokens_for(self, setup: TrainingSetup) -> int:
        if self.steps is not None:
            return tokens_from_steps(self.steps, setup)
        return self.tokens or 0


def tokens_from_steps(steps: int, setup: TrainingSetup) -> int:
    """Tokens of ``steps`` optimizer steps of packed rows (an upper bound for padded rows)."""
    return steps * setup.rows_per_step * setup.max_seq_length


def tokens_from_dataset(rows: int, mean_tokens_per_row: float, epochs: float = 1.0) -> int:
    """Tokens of ``epochs`` passes over ``rows`` examples of ``mean_tokens_per_row``."""
    return math.ceil(rows * mean_tokens_per_row * epochs)


def training_hours(
    model: ModelShape,
    *,
    method: str,
    tokens: int,
    instance: InstanceSpec,
    scaling: Speedup,
    mfu: float = DEFAULT_MFU,
) -> float:
    """Compute time of the training loop, hours (no start-up or upload)."""
    flops = _FLOPS_PER_PARAMETER_TOKEN * model.active_parameters * tokens
    if method == "qlora":
        flops *= _QLORA_DEQUANT_FACTOR
    per_gpu = instance.bf16_tflops_per_gpu * 1e12 * mfu
    return flops / (per_gpu * scaling.factor) / 3600


@dataclass(frozen=True)
class CostEstimate:
    """Cost of ``hours`` on ``instance_count`` instances, USD.

    ``price_region`` is the region whose price was used; it differs from ``region`` when the
    catalog has no price there (``note`` says so). ``usd_per_instance_hour`` is after the spot
    discount when ``spot``.
    """

    instance_type: str
    region: str
    price_region: str
    spot: bool
    on_demand_usd_per_instance_hour: float
    spot_discount: float | None
    usd_per_instance_hour: float
    hours: float
    instance_count: int
    total_usd: float
    price_kind: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = rounded(self)
        return result


def hourly_price(spec: InstanceSpec, region: str) -> tuple[float, str] | None:
    """On-demand USD per instance-hour of ``spec`` where it is offered, and the region priced.

    In a region the catalog prices, a type without a price there is not offered (None); for a
    region the catalog does not know, the default region's prices stand in.
    """
    catalog = get_catalog()
    if region in catalog.regions:
        price = spec.usd_per_hour.get(region)
        return None if price is None else (price, region)
    return spec.price(catalog.default_region, catalog.default_region)


def estimate_cost(
    instance_type: str, region: str, hours: float, instance_count: int = 1, spot: bool = False
) -> CostEstimate:
    """``hours x instance_count x price``; spot applies the catalog's assumed discount.

    Never fails on the region: without a price there, the default region's is used and
    ``price_region`` / ``note`` say so.
    """
    catalog = get_catalog()
    spec = get_instance(instance_type)
    priced = spec.price(region, catalog.default_region)
    # The catalog prices every type in its default region (the catalog tests check it).
    assert priced is not None
    on_demand, price_region = priced
    notes: list[str] = []
    if price_region != region:
        notes.append(
            f"no {spec.name} price for {region!r} in the catalog (as of {catalog.as_of}); "
            f"used the {price_region} price"
        )
    if spec.price_kind != "training":
        notes.append(f"{spec.name} price is the SageMaker {spec.price_kind} price")
    discount = catalog.spot_discount(spec) if spot else None
    rate = on_demand * (1 - discount) if discount is not None else on_demand
    return CostEstimate(
        instance_type=spec.name,
        region=region,
        price_region=price_region,
        spot=spot,
        on_demand_usd_per_instance_hour=on_demand,
        spot_discount=discount,
        usd_per_instance_hour=rate,
        hours=hours,
        instance_count=instance_count,
        total_usd=rate * hours * instance_count,
        price_kind=spec.price_kind,
        note="; ".join(notes),
    )
