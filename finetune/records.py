"""Runs as people compare them: one row per run record, the best one marked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from runspec.catalog import UnknownInstanceType, get_catalog, get_instance

__all__ = ["INTERRUPTED_HINT", "RunRow", "mark_best", "run_row"]

#: What an ``interrupted`` run (local backend: its process ended before the run did) means.
INTERRUPTED_HINT = "the process running it ended; launch the same request again to retry it"
#: Runs that cannot be the best: they did not finish, or did not pass.
_NOT_CANDIDATES = ("failed", "rejected", "interrupted", "running")

#: Hyperparameters shown side by side (in the table and in compare).
KEY_PARAMETERS = ("method", "learning_rate", "lora_r", "epochs", "max_steps", "max_seq_length")


@dataclass
class RunRow:
    run_id: str
    status: str
    experiment: str
    base_model: str
    instance_type: str
    spot: bool
    parameters: dict[str, str]
    eval_loss: float | None
    perplexity: float | None
    train_loss: float | None
    gate: str | None
    model_package: str | None
    endpoint: str | None
    cost_usd: float | None
    updated_at: str
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_row(record: dict[str, Any], *, local: bool) -> RunRow:
    run = record.get("run", {})
    request = run.get("request", {})
    hyperparameters = run.get("training", {}).get("hyperparameters", {})
    metrics: dict[str, float] = {}
    gate = model_package = endpoint = None
    billable = None
    for milestone in record.get("milestones", []):
        metrics.update(milestone.get("metrics") or {})
        if milestone.get("evaluation"):
            gate = milestone["evaluation"].get("reason")
        model_package = milestone.get("model_package_arn") or model_package
        endpoint = milestone.get("endpoint_name") or endpoint
        billable = milestone.get("billable_seconds", billable)
    training = run.get("training", {})
    parameters = {name: hyperparameters[name] for name in KEY_PARAMETERS if name in hyperparameters}
    parameters.setdefault("method", "lora")
    return RunRow(
        run_id=record["run_id"],
        status=record.get("status", "unknown"),
        experiment=request.get("experiment_name", ""),
        base_model=run.get("base_model", ""),
        instance_type=training.get("instance_type", ""),
        spot=bool(training.get("spot", False)),
        parameters=parameters,
        eval_loss=metrics.get("eval_loss"),
        perplexity=metrics.get("perplexity"),
        train_loss=metrics.get("train_loss"),
        gate=gate,
        model_package=model_package,
        endpoint=endpoint,
        cost_usd=None if local else _cost(training, billable),
        updated_at=record.get("updated_at", ""),
    )


def _cost(training: dict[str, Any], billable_seconds: float | None) -> float | None:
    """Billable training time at the catalog's price (spot discount when spot)."""
    if billable_seconds is None or not training.get("instance_type"):
        return None
    try:
        spec = get_instance(training["instance_type"])
    except UnknownInstanceType:
        return None
    price = spec.price("us-east-1")
    if price is None:
        return None
    hourly = price[0] * training.get("instance_count", 1)
    if training.get("spot"):
        hourly *= 1 - get_catalog().spot_discount(spec)
    return round(hourly * billable_seconds / 3600, 2)


def mark_best(rows: list[RunRow], metric: str = "eval_loss") -> list[RunRow]:
    """Mark the run with the lowest ``metric`` among runs that were not rejected, failed or
    interrupted."""
    candidates = [
        r for r in rows if getattr(r, metric) is not None and r.status not in _NOT_CANDIDATES
    ]
    if candidates:
        min(candidates, key=lambda r: getattr(r, metric)).best = True
    return rows
