"""Does a training setup fit its instances, and what would make it fit.

A setup fits when its instance has NVIDIA GPUs, the training code runs its method under the
strategy it would choose (:mod:`runspec.estimate.strategy`), one GPU holds the step's peak
memory under that strategy (:mod:`runspec.estimate.memory`), and, under FSDP, rank 0's host RAM
holds the weights it reads before sharding them. A final merge that the instance cannot hold is
a warning: training would succeed and the merge fail.

What would make it fit is returned as data: :class:`Suggestion` s, each a set of
:class:`Change` s to the setup's fields (the training code's hyperparameter names, and the
instance type and count) with the per-GPU memory they lead to. The launch function words them in
request fields, the CLI for people. Candidates, cheapest to apply first: the other method, a
micro-batch of 1 (with the gradient accumulation that keeps the global batch), gradient
checkpointing, FSDP instead of a requested DDP, more instances of the same type, the cheapest
allowed configuration per hour; when none of them fits, the longest sequence that does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from runspec.catalog import InstanceSpec, get_catalog
from runspec.defaults import hyperparameter_bounds
from runspec.estimate._data import rounded
from runspec.estimate.cost import hourly_price
from runspec.estimate.memory import (
    MemoryEstimate,
    describe_run,
    estimate_memory,
    load_memory_needed_gib,
    merge_memory_needed_gib,
    whole_instance_memory_gib,
)
from runspec.estimate.strategy import Strategy, StrategyDecision, decide_strategy
from runspec.setup import Field, TrainingSetup

__all__ = [
    "Change",
    "FitReason",
    "FitResult",
    "Suggestion",
    "can_train",
    "cheapest_configuration",
    "check_fit",
    "fitting_configurations",
]

FitReason = Literal[
    "fits",
    "out_of_memory",
    "out_of_host_memory",
    "strategy_refused",
    "no_gpu",
    "unsupported_accelerator",
]


@dataclass(frozen=True)
class Change:
    field: Field
    value: str | int | bool


@dataclass(frozen=True)
class Suggestion:
    """Changes that, together, make the setup fit; ``reason`` gives the memory they lead to."""

    changes: tuple[Change, ...]
    needed_gib: float
    available_gib: float
    reason: str


@dataclass(frozen=True)
class FitResult:
    """Whether a setup fits its instances, per GPU, and what would make it fit.

    ``field`` is the setup field at fault when it does not fit (the instance type, or a
    ``distributed_strategy`` the training code refuses). ``strategy`` is None on an instance
    the training code cannot use. ``summary`` is one sentence about the instance and the need,
    without the field's name or the suggestions (their wording is the caller's).
    """

    instance_type: str
    instance_count: int
    gpus_per_instance: int
    gpu_model: str | None
    gpu_memory_gib: float
    available_gib: float
    needed_gib: float
    headroom_gib: float
    fits: bool
    reason: FitReason
    field: Field
    strategy: StrategyDecision | None
    memory: MemoryEstimate
    host_memory_needed_gib: float
    merge_memory_needed_gib: float
    merge_memory_available_gib: float
    merge_fits: bool
    summary: str
    suggestions: tuple[Suggestion, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = rounded(self)
        return result


def can_train(spec: InstanceSpec) -> bool:
    """The training code runs on NVIDIA GPUs only."""
    return spec.has_nvidia_gpu and spec.training_supported


@dataclass(frozen=True)
class _Assessment:
    reason: FitReason
    strategy: StrategyDecision | None
    memory: MemoryEstimate

    @property
    def fits(self) -> bool:
        return self.reason == "fits"


def _assess(setup: TrainingSetup) -> _Assessment:
    spec = setup.instance
    if not can_train(spec):
        # What one GPU would need.
        memory = estimate_memory(setup.with_changes(instance_count=1), "single")
        no_gpu = spec.accelerator_type != "neuron"
        return _Assessment("no_gpu" if no_gpu else "unsupported_accelerator", None, memory)
    decision = decide_strategy(setup)
    if decision.strategy is None:
        # What replicating the model, which the training code would have to do, needs.
        return _Assessment("strategy_refused", decision, estimate_memory(setup, "ddp"))
    memory = estimate_memory(setup, decision.strategy)
    if memory.total_gib > spec.gpu_usable_memory_gib:
        return _Assessment("out_of_memory", decision, memory)
    if load_memory_needed_gib(setup.model, decision.strategy) > spec.memory_gib:
        return _Assessment("out_of_host_memory", decision, memory)
    return _Assessment("fits", decision, memory)


def _strategy(assessment: _Assessment) -> Strategy:
    """The strategy the memory was computed for."""
    return assessment.memory.strategy


def _merge_fits(setup: TrainingSetup, strategy: Strategy) -> bool:
    needed = merge_memory_needed_gib(setup.model, setup.method, strategy)
    return needed <= whole_instance_memory_gib(setup.instance)


def fitting_configurations(setup: TrainingSetup) -> Iterator[TrainingSetup]:
    """``setup`` on every allowed instance type the catalog knows and prices in the setup's
    region, with 1 to the platform's most instances, where it fits, final merge included."""
    catalog = get_catalog()
    for name in setup.platform.allowed_instance_types:
        spec = catalog.instances.get(name)
        if spec is None or not can_train(spec) or hourly_price(spec, setup.platform.region) is None:
            continue
        for count in range(1, setup.platform.max_instances + 1):
            candidate = setup.with_changes(instance=spec, instance_count=count)
            assessment = _assess(candidate)
            if assessment.fits and _merge_fits(candidate, _strategy(assessment)):
                yield candidate


def _hourly_cost(setup: TrainingSetup) -> float:
    priced = hourly_price(setup.instance, setup.platform.region)
    assert priced is not None  # the candidates are the types offered in the region
    return priced[0] * setup.instance_count


def cheapest_configuration(
    setup: TrainingSetup, cost: Callable[[TrainingSetup], float] = _hourly_cost
) -> TrainingSetup | None:
    """The fitting configuration (:func:`fitting_configurations`) of least ``cost``, by default
    on-demand USD per hour (ties: fewer GPUs, then the name)."""
    candidates = [
        (cost(c), c.world_size, c.instance_type, c.instance_count, c)
        for c in fitting_configurations(setup)
    ]
    return min(candidates, key=lambda t: t[:4])[4] if candidates else None


def _gpus(spec: InstanceSpec) -> str:
    plural, each = ("s", " each") if spec.gpus > 1 else ("", "")
    return (
        f"{spec.gpus}×{spec.gpu_memory_gib:g} GiB GPU{plural} "
        f"({spec.gpu_model}, {spec.gpu_usable_memory_gib:.1f} GiB usable{each})"
    )


def _summary(setup: TrainingSetup, assessment: _Assessment) -> str:
    spec = setup.instance
    name = repr(spec.name)
    if setup.instance_count > 1:
        name += f" ×{setup.instance_count}"
    run = describe_run(setup.method, setup.model)
    memory = assessment.memory
    needed = memory.total_gib
    decision = assessment.strategy
    if decision is None:
        has = (
            "has no GPU"
            if assessment.reason == "no_gpu"
            else f"has AWS {spec.gpu_model} (Neuron) accelerators, which this training code "
            "cannot use (it needs NVIDIA GPUs)"
        )
        return f"{name} {has}; {run} needs ~{needed:.1f} GiB of GPU memory"
    if decision.strategy is None:
        return f"{name} has {_gpus(spec)}; {run} cannot run there: {decision.reason}"
    how = "" if decision.strategy == "single" else f" under {decision.strategy}"
    if assessment.reason == "out_of_memory":
        return (
            f"{name} has {_gpus(spec)}; {run}{how} needs ~{needed:.1f} GiB per GPU "
            f"({memory.breakdown()})"
        )
    if assessment.reason == "out_of_host_memory":
        load = load_memory_needed_gib(setup.model, decision.strategy)
        return (
            f"{name} has {spec.memory_gib:g} GiB of RAM; {run}{how} reads the bf16 weights into "
            f"rank 0's RAM before sharding them (~{load:.0f} GiB)"
        )
    return (
        f"{name} has {_gpus(spec)}; {run}{how} needs ~{needed:.1f} GiB per GPU "
        f"({memory.breakdown()}), {spec.gpu_usable_memory_gib - needed:.1f} GiB headroom"
    )


def _suggestion(setup: TrainingSetup, changes: dict[Field, Any]) -> Suggestion | None:
    """The suggestion to apply ``changes`` if the changed setup fits."""
    changed = setup.with_changes(**changes)
    assessment = _assess(changed)
    if not assessment.fits:
        return None
    needed = assessment.memory.total_gib
    available = changed.instance.gpu_usable_memory_gib
    strategy = _strategy(assessment)
    return Suggestion(
        changes=tuple(Change(field, value) for field, value in changes.items()),
        needed_gib=needed,
        available_gib=available,
        reason=f"~{needed:.1f} of {available:.1f} GiB per GPU under {strategy}",
    )


def _suggestions(setup: TrainingSetup, assessment: _Assessment) -> list[Suggestion]:
    candidates: list[dict[Field, Any]] = []
    if assessment.strategy is not None:
        candidates.append({"method": "qlora" if setup.method == "lora" else "lora"})
        if setup.per_device_train_batch_size > 1:
            # the same global batch in smaller micro-batches, where the contract allows it
            accumulation = setup.gradient_accumulation_steps * setup.per_device_train_batch_size
            limit = hyperparameter_bounds("gradient_accumulation_steps")["maximum"]
            smaller: dict[Field, Any] = {"per_device_train_batch_size": 1}
            if accumulation <= limit:
                smaller["gradient_accumulation_steps"] = accumulation
            candidates.append(smaller)
        if not setup.gradient_checkpointing:
            candidates.append({"gradient_checkpointing": True})
        if setup.distributed and setup.distributed_strategy == "ddp" and setup.method == "lora":
            candidates.append({"distributed_strategy": "fsdp"})
        for count in range(setup.instance_count + 1, setup.platform.max_instances + 1):
            if _assess(setup.with_changes(instance_count=count)).fits:
                candidates.append({"instance_count": count})
                break
    found = [s for s in (_suggestion(setup, c) for c in candidates) if s is not None]
    best = cheapest_configuration(setup)
    if best is not None and best.instance_type != setup.instance_type:
        changes: dict[Field, Any] = {"instance_type": best.instance_type}
        if best.instance_count != setup.instance_count:
            changes["instance_count"] = best.instance_count
        found.extend(s for s in [_suggestion(setup, changes)] if s is not None)
    if not found and assessment.strategy is not None:
        found.extend(s for s in [_longest_sequence(setup)] if s is not None)
    return found


def _longest_sequence(setup: TrainingSetup) -> Suggestion | None:
    """The longest ``max_seq_length`` (a multiple of 64, within the contract) that fits."""
    shortest = hyperparameter_bounds("max_seq_length")["minimum"]
    low, high = 0, (setup.max_seq_length - 1) // 64
    while low < high:  # the largest k with k * 64 fitting: memory grows with the length
        middle = (low + high + 1) // 2
        if _assess(setup.with_changes(max_seq_length=middle * 64)).fits:
            low = middle
        else:
            high = middle - 1
    if low * 64 < shortest:
        return None
    return _suggestion(setup, {"max_seq_length": low * 64})


def check_fit(setup: TrainingSetup) -> FitResult:
    """Whether ``setup`` fits its instances; when not, what would (:func:`_suggestions`)."""
    spec = setup.instance
    assessment = _assess(setup)
    decision = assessment.strategy
    strategy = _strategy(assessment)
    merge_needed = merge_memory_needed_gib(setup.model, setup.method, strategy)
    merge_available = whole_instance_memory_gib(spec)
    warnings: list[str] = []
    if assessment.fits and merge_needed > merge_available:
        warnings.append(
            f"merging the adapter loads a bf16 copy of the base model (~{merge_needed:.0f} GiB) "
            f"into {spec.name}'s GPU memory and RAM (~{merge_available:.0f} GiB in all): "
            "training would fit but the merge would fail"
        )
    available = spec.gpu_usable_memory_gib if can_train(spec) else 0.0
    needed = assessment.memory.total_gib
    explicit = setup.distributed_strategy != "auto" and assessment.reason == "strategy_refused"
    return FitResult(
        instance_type=spec.name,
        instance_count=setup.instance_count,
        gpus_per_instance=spec.gpus,
        gpu_model=spec.gpu_model,
        gpu_memory_gib=spec.gpu_memory_gib,
        available_gib=available,
        needed_gib=needed,
        headroom_gib=available - needed,
        fits=assessment.fits,
        reason=assessment.reason,
        field="distributed_strategy" if explicit else "instance_type",
        strategy=decision,
        memory=assessment.memory,
        host_memory_needed_gib=load_memory_needed_gib(setup.model, strategy),
        merge_memory_needed_gib=merge_needed,
        merge_memory_available_gib=merge_available,
        merge_fits=merge_needed <= merge_available,
        summary=_summary(setup, assessment),
        suggestions=() if assessment.fits else tuple(_suggestions(setup, assessment)),
        warnings=tuple(warnings),
    )
