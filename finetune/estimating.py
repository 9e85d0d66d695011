"""``finetune estimate``: the run's fit, strategy, speed-up, time and cost, worded for people.

The training setup is built from the run request and the platform's configuration exactly as the
launch function builds it (``runspec.setup``), and estimated by the same code
(``runspec.estimate``); a run this command calls refused is one the launch function refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from finetune.errors import EXIT_USAGE, CliError
from runspec.catalog import get_catalog
from runspec.estimate import (
    ConfigurationEstimate,
    RunEstimate,
    Suggestion,
    Workload,
    estimate_run,
)
from runspec.request import RunRequest
from runspec.setup import REQUEST_FIELDS, PlatformLimits, SetupError, TrainingSetup
from stacks.config import PlatformConfig

__all__ = ["EstimateReport", "estimate_request", "render_estimate"]

#: Tokens when neither --tokens, max_steps nor a local dataset says: a mid-sized instruction set.
ASSUMED_TOKENS = 10_000_000
#: Characters per token for English text with Llama-family tokenizers (rule of thumb).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class EstimateReport:
    """The estimate and what the launch function would refuse (``problems``, request terms)."""

    estimate: RunEstimate
    problems: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "problems": list(self.problems)}

    def refusal(self, run_file: Path) -> CliError | None:
        """The error to exit with (2) when the platform would refuse the run."""
        if not self.problems:
            return None
        best = self.estimate.recommended
        hint = (
            f"{_configuration(best)} fits: {best.fit.needed_gib:.1f} of "
            f"{best.fit.available_gib:.1f} GiB per GPU"
            if best is not None
            else "nothing this platform allows fits this run; see the estimate above"
        )
        return CliError(f"{run_file}: {'; '.join(self.problems)}", hint=hint, exit_code=EXIT_USAGE)


def estimate_request(
    request: RunRequest,
    config: PlatformConfig,
    *,
    region: str | None,
    tokens: int | None,
    dataset: Path | None,
) -> EstimateReport:
    platform = PlatformLimits(
        default_instance_type=config.training_instance_type,
        allowed_instance_types=config.allowed_training_instance_types,
        max_instances=config.max_training_instances,
        region=region or config.region or get_catalog().default_region,
    )
    try:
        setup = TrainingSetup.from_request(request, platform)
    except SetupError as error:
        raise CliError(
            "; ".join(error.problems),
            hint="set model_parameters_billions in the run file"
            if any(p.startswith("model_parameters_billions") for p in error.problems)
            else None,
            exit_code=EXIT_USAGE,
        ) from None
    estimate = estimate_run(setup, _workload(setup, tokens, dataset))
    # As the launch function checks: the platform's limits, then (within them) the fit.
    problems = setup.limit_problems()
    fit = estimate.requested.fit
    if not problems and not fit.fits:
        problems.append(f"{REQUEST_FIELDS[fit.field]}: {fit.summary}")
    return EstimateReport(estimate, tuple(problems))


def _workload(setup: TrainingSetup, tokens: int | None, dataset: Path | None) -> Workload:
    if tokens is not None:
        return Workload("given with --tokens", tokens=tokens)
    if setup.max_steps is not None:
        return Workload(
            "max_steps × micro-batch × accumulation × GPUs × max_seq_length", steps=setup.max_steps
        )
    if dataset is not None:
        return Workload(
            f"{dataset.name}: characters / {CHARS_PER_TOKEN:g} × {setup.epochs:g} epochs",
            tokens=_dataset_tokens(dataset, setup.epochs),
        )
    return Workload("assumed; pass --tokens or --dataset for your data", tokens=ASSUMED_TOKENS)


def _dataset_tokens(path: Path, epochs: float) -> int:
    characters = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    characters += len(json.dumps(json.loads(line), ensure_ascii=False))
    except (OSError, ValueError) as error:
        raise CliError(f"{path}: cannot read as JSONL ({error})", exit_code=EXIT_USAGE) from None
    return max(1, int(characters / CHARS_PER_TOKEN * epochs))


# -- for people -------------------------------------------------------------------------------

#: How a suggested change reads; the setting as the run file names it in parentheses.
_SAY: dict[str, Callable[[Any], str]] = {
    "method": lambda v: f"{'QLoRA' if v == 'qlora' else 'LoRA'} (method: {v})",
    "per_device_train_batch_size": lambda v: (
        f"micro-batches of {v} (per_device_train_batch_size: {v})"
    ),
    "gradient_accumulation_steps": lambda v: (
        f"{v} accumulation steps, the same global batch (gradient_accumulation_steps: {v})"
    ),
    "gradient_checkpointing": lambda v: "gradient checkpointing (gradient_checkpointing: true)",
    "distributed_strategy": lambda v: f"the model sharded with FSDP (distributed_strategy: {v})",
    "instance_type": lambda v: f"{v} (instance_type)",
    "instance_count": lambda v: f"{v} instance{'s' if v > 1 else ''} (instance_count: {v})",
    "max_seq_length": lambda v: f"sequences of at most {v} tokens (max_seq_length: {v})",
}


def describe_suggestion(suggestion: Suggestion) -> str:
    return (
        f"{' and '.join(_SAY[c.field](c.value) for c in suggestion.changes)}: {suggestion.reason}"
    )


def _configuration(entry: ConfigurationEstimate) -> str:
    return f"{entry.instance_type} ×{entry.instance_count}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _strategy(entry: ConfigurationEstimate) -> str:
    """The strategy, ``refused`` by the training code, or ``-`` where it cannot train."""
    decision = entry.fit.strategy
    return "-" if decision is None else decision.strategy or "refused"


#: Why a configuration does not fit, in a table cell.
_WHY = {
    "out_of_memory": "GPU memory",
    "out_of_host_memory": "RAM",
    "strategy_refused": "strategy",
    "no_gpu": "no GPU",
    "unsupported_accelerator": "no NVIDIA GPU",
}


def _row(entry: ConfigurationEstimate, label: str) -> list[str]:
    fit = entry.fit
    verdict = "yes" if fit.fits else f"no ({_WHY[fit.reason]})"
    return [
        label,
        str(entry.world_size if fit.strategy is not None else "-"),
        _strategy(entry),
        f"{fit.needed_gib:.1f}/{fit.available_gib:.1f}",
        verdict,
        "-" if entry.speedup is None else f"{entry.speedup.factor:.1f}×",
        _hours(entry.billable_hours),
        _money(entry.run_usd(spot=False)),
        _money(entry.run_usd(spot=True)),
    ]


def render_estimate(console: Console, report: EstimateReport) -> None:
    estimate = report.estimate
    model = estimate.model
    requested = estimate.requested
    fit = requested.fit
    method = "QLoRA" if estimate.method == "qlora" else "LoRA"
    console.print(
        Text.assemble(
            (model.name, "bold"),
            f" ({model.size_label()}, {model.source}) · {method} r={estimate.lora_r} · "
            f"seq {estimate.sequence_length} × micro-batch {estimate.micro_batch_size} × "
            f"accumulation {estimate.gradient_accumulation_steps} · "
            f"{requested.tokens:,} tokens ({estimate.workload.basis})",
        ),
        highlight=False,
    )
    verdict = ("fits", "green") if fit.fits else ("does not fit", "red")
    console.print(
        Text.assemble(verdict, f": {fit.summary}"),
        highlight=False,
    )
    if fit.strategy is not None and fit.strategy.strategy != "single":
        console.print(f"strategy: {_strategy(requested)} ({fit.strategy.reason})", highlight=False)
    table = Table(
        title=f"{requested.instance_type} by instance count, {estimate.region} "
        f"(catalog as of {estimate.catalog_as_of})"
    )
    for column in (
        "configuration",
        "GPUs",
        "strategy",
        "GiB per GPU needed/usable",
        "fits",
        "speed-up",
        "hours",
        "on-demand $",
        "spot $",
    ):
        table.add_column(column)
    for entry in estimate.by_instance_count:
        mark = " (requested)" if entry.instance_count == requested.instance_count else ""
        table.add_row(*_row(entry, f"{_configuration(entry)}{mark}"))
    best = estimate.recommended
    if best is not None and best.instance_type != requested.instance_type:
        table.add_row(*_row(best, f"{_configuration(best)} (cheapest that fits)"))
    console.print(table)
    if best is None:
        console.print("Nothing this platform allows fits this run.", style="red")
    else:
        pricing = "spot" if estimate.spot_requested else "on-demand"
        console.print(
            Text.assemble(
                "cheapest configuration that fits: ",
                (_configuration(best), "bold"),
                f" ({_strategy(best)}, ~{best.fit.needed_gib:.1f} GiB per GPU), "
                f"{_hours(best.billable_hours)} h, "
                f"${_money(best.run_usd(estimate.spot_requested))} {pricing}",
            ),
            highlight=False,
        )
    # Another instance type is said above, as the cheapest run that fits (the launch function,
    # which does not know the data's size, suggests the cheapest per hour).
    changes = [s for s in fit.suggestions if s.changes[0].field != "instance_type"]
    if changes:
        console.print(f"or, to make {_configuration(requested)} fit, one of:")
        for suggestion in changes:
            console.print(f"  - {describe_suggestion(suggestion)}", highlight=False)
    for note in estimate.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
