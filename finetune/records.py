"""Runs as people compare them: one row per run record, the best one marked.

Runs are compared on a metric only when scored on a comparable basis (runspec.run.ScoringBasis:
the same held-out data, the same tokenizer for losses, the same generation settings for task
metrics); the others are shown, marked not comparable, and never the best.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from runspec.catalog import UnknownInstanceType, get_catalog, get_instance
from runspec.request import HIGHER_IS_BETTER
from runspec.run import ScoringBasis

__all__ = ["INTERRUPTED_HINT", "RunRow", "mark_best", "ranking_metric", "run_row"]

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
    #: Every metric the run reported (evaluation metrics on its test set when it had one).
    metrics: dict[str, float] = field(default_factory=dict)
    #: What the metrics were measured on (None: recorded before scoring bases).
    scored: dict[str, Any] | None = None
    #: The MLflow run its job logged to.
    mlflow_run_id: str | None = None
    #: Compared with the reference run on ``ranked_by``; why not, when not.
    comparable: bool = True
    not_comparable: str | None = None
    ranked_by: str = "eval_loss"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def basis(self) -> ScoringBasis | None:
        return ScoringBasis.model_validate(self.scored) if self.scored else None


def run_row(record: dict[str, Any], *, local: bool) -> RunRow:
    run = record.get("run", {})
    request = run.get("request", {})
    hyperparameters = run.get("training", {}).get("hyperparameters", {})
    metrics: dict[str, float] = {}
    gate = model_package = endpoint = None
    billable = None
    scored = mlflow_run_id = None
    for milestone in record.get("milestones", []):
        metrics.update(milestone.get("metrics") or {})
        scored = milestone.get("scoring") or scored
        mlflow_run_id = milestone.get("mlflow_run_id") or mlflow_run_id
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
        metrics=metrics,
        scored=scored,
        mlflow_run_id=mlflow_run_id,
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


def ranking_metric(rows: list[RunRow]) -> str:
    """The metric runs are ranked by when none is named: exact_match when a run has it (a task
    metric on a test set), else eval_loss."""
    return "exact_match" if any("exact_match" in r.metrics for r in rows) else "eval_loss"


def mark_best(
    rows: list[RunRow], metric: str | None = None, *, reference: RunRow | None = None
) -> list[RunRow]:
    """Mark which runs are comparable on ``metric`` with ``reference`` (default: the first row
    that has the metric, i.e. the newest), and the best of those among runs that were not
    rejected, failed or interrupted (lowest loss, highest score)."""
    metric = metric or ranking_metric(rows)
    with_metric = [r for r in rows if r.metrics.get(metric) is not None]
    reference = reference or (with_metric[0] if with_metric else None)
    theirs = reference.basis if reference is not None else None
    for row in rows:
        row.ranked_by = metric
        row.comparable, row.not_comparable = True, None
        if reference is None or row is reference or row.metrics.get(metric) is None:
            continue
        mine = row.basis
        if theirs is None or mine is None:
            if (theirs is None) != (mine is None):
                row.comparable = False
                row.not_comparable = "not scored on a recorded basis"
        elif not theirs.comparable(mine, metric):
            row.comparable = False
            row.not_comparable = theirs.why_not(mine, metric)
    candidates = [r for r in with_metric if r.comparable and r.status not in _NOT_CANDIDATES]
    for row in rows:
        row.best = False
    if candidates:
        higher = metric in HIGHER_IS_BETTER
        pick = max if higher else min
        pick(candidates, key=lambda r: r.metrics[metric]).best = True
    return rows
