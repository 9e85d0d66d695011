"""The whole-run estimate ``finetune estimate`` shows: the requested configuration, the same
instance type with each instance count the platform allows, and the cheapest configuration that
fits, each with its fit, strategy, speed-up, time and cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runspec.catalog import ModelShape, get_catalog
from runspec.estimate._data import rounded
from runspec.estimate.cost import (
    DEFAULT_MFU,
    DEFAULT_OVERHEAD_HOURS,
    SCALING_ASSUMPTION,
    CostEstimate,
    Speedup,
    Workload,
    estimate_cost,
    speedup,
    training_hours,
)
from runspec.estimate.fit import FitResult, cheapest_configuration, check_fit
from runspec.setup import TrainingSetup

__all__ = ["ConfigurationEstimate", "RunEstimate", "estimate_configuration", "estimate_run"]


@dataclass(frozen=True)
class ConfigurationEstimate:
    """Fit, speed-up, time and cost of the run on ``instance_count`` instances of a type.

    ``speedup``, the hours and the costs are None when the training code cannot run there (no
    NVIDIA GPU, or a strategy it refuses). ``tokens`` depends on the world size for a run of
    ``max_steps``.
    """

    instance_type: str
    instance_count: int
    world_size: int
    fit: FitResult
    tokens: int
    speedup: Speedup | None
    training_hours: float | None
    billable_hours: float | None
    on_demand: CostEstimate | None
    spot: CostEstimate | None

    def run_usd(self, spot: bool) -> float | None:
        cost = self.spot if spot else self.on_demand
        return None if cost is None else cost.total_usd


def estimate_configuration(
    setup: TrainingSetup, workload: Workload, *, mfu: float, overhead_hours: float
) -> ConfigurationEstimate:
    fit = check_fit(setup)
    tokens = workload.tokens_for(setup)
    common: dict[str, Any] = {
        "instance_type": setup.instance_type,
        "instance_count": setup.instance_count,
        "world_size": setup.world_size,
        "fit": fit,
        "tokens": tokens,
    }
    strategy = fit.strategy.strategy if fit.strategy is not None else None
    if strategy is None:
        return ConfigurationEstimate(
            **common,
            speedup=None,
            training_hours=None,
            billable_hours=None,
            on_demand=None,
            spot=None,
        )
    scaling = speedup(strategy, setup.world_size, setup.instance_count)
    hours = training_hours(
        setup.model,
        method=setup.method,
        tokens=tokens,
        instance=setup.instance,
        scaling=scaling,
        mfu=mfu,
    )
    billable = hours + overhead_hours
    region, count = setup.platform.region, setup.instance_count
    return ConfigurationEstimate(
        **common,
        speedup=scaling,
        training_hours=hours,
        billable_hours=billable,
        on_demand=estimate_cost(setup.instance_type, region, billable, count),
        spot=estimate_cost(setup.instance_type, region, billable, count, spot=True),
    )


@dataclass(frozen=True)
class RunEstimate:
    """What ``finetune estimate`` prints.

    ``by_instance_count``: the requested instance type with 1 to the platform's most instances
    (and the requested count). ``recommended``: the cheapest configuration that fits (run cost,
    spot when the run asks for spot), among the platform's allowed instance types; None when
    nothing fits.
    """

    model: ModelShape
    method: str
    sequence_length: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    lora_r: int
    gradient_checkpointing: bool
    distributed_strategy: str
    region: str
    spot_requested: bool
    workload: Workload
    mfu: float
    overhead_hours: float
    max_instances: int
    requested: ConfigurationEstimate
    by_instance_count: tuple[ConfigurationEstimate, ...]
    recommended: ConfigurationEstimate | None
    catalog_as_of: str
    notes: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return self.requested.fit.fits

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (floats rounded to 4 decimals)."""
        result: dict[str, Any] = rounded(self)
        result["model"]["approximate"] = self.model.approximate
        result["model"]["size"] = self.model.size_label()
        result["tokens"] = self.requested.tokens
        result["tokens_basis"] = self.workload.basis
        return result


def estimate_run(
    setup: TrainingSetup,
    workload: Workload,
    *,
    mfu: float = DEFAULT_MFU,
    overhead_hours: float = DEFAULT_OVERHEAD_HOURS,
) -> RunEstimate:
    """The requested configuration, each instance count, and the cheapest that fits."""

    def configuration(candidate: TrainingSetup) -> ConfigurationEstimate:
        return estimate_configuration(candidate, workload, mfu=mfu, overhead_hours=overhead_hours)

    def run_cost(candidate: TrainingSetup) -> float:
        cost = configuration(candidate).run_usd(setup.spot)
        assert cost is not None  # the candidates fit: the training code runs them
        return cost

    requested = configuration(setup)
    counts = sorted({*range(1, setup.platform.max_instances + 1), setup.instance_count})
    by_count = tuple(
        requested
        if n == setup.instance_count
        else configuration(setup.with_changes(instance_count=n))
        for n in counts
    )
    best = cheapest_configuration(setup, run_cost)
    catalog = get_catalog()
    notes = [
        f"prices are approximate SageMaker AI on-demand prices as of {catalog.as_of}; "
        "refresh from https://aws.amazon.com/sagemaker/pricing/",
        f"spot assumes the catalog's discount ({catalog.spot_note})",
        SCALING_ASSUMPTION,
    ]
    if setup.model.approximate:
        notes.append(
            f"model shape of {setup.model.name!r} derived from "
            f"{setup.model.parameters_billions:.2f}B parameters ({setup.model.source}); memory "
            "and time are rougher than for catalogued models"
        )
    if requested.on_demand is not None and requested.on_demand.note:
        notes.append(requested.on_demand.note)
    notes.extend(requested.fit.warnings)
    return RunEstimate(
        model=setup.model,
        method=setup.method,
        sequence_length=setup.max_seq_length,
        micro_batch_size=setup.per_device_train_batch_size,
        gradient_accumulation_steps=setup.gradient_accumulation_steps,
        lora_r=setup.lora_r,
        gradient_checkpointing=setup.gradient_checkpointing,
        distributed_strategy=setup.distributed_strategy,
        region=setup.platform.region,
        spot_requested=setup.spot,
        workload=workload,
        mfu=mfu,
        overhead_hours=overhead_hours,
        max_instances=setup.platform.max_instances,
        requested=requested,
        by_instance_count=by_count,
        recommended=None if best is None else configuration(best),
        catalog_as_of=catalog.as_of,
        notes=tuple(notes),
    )
