"""The evaluation gate, decided once, and which runs it may compare.

A run's metrics are measured on one basis (``runspec.run.ScoringBasis``: the held-out data's
digest, the tokenizer, the generation settings). The gate's rules apply to the run's own
metrics; ``must_beat_best_approved`` compares a metric only with Approved packages scored on a
comparable basis (read from their metadata, which the record function wrote and nobody may
rewrite). Packages scored on other data, with another tokenizer (token metrics) or other
generation settings (generated metrics) are counted as not comparable and left out, so a model
is never rejected, or promoted, because another test set was easier.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runspec.request import Evaluation, metric_direction
from runspec.run import (
    BestApprovedComparison,
    GateDecision,
    RuleResult,
    RunDocument,
    ScoringBasis,
)

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

__all__ = [
    "BestApproved",
    "basis_from_metadata",
    "basis_metadata",
    "best_approved",
    "better",
    "decide_gate",
    "pinned_basis",
]

#: Package metadata keys of the scoring basis (runspec.run.PACKAGE_METADATA_KEYS).
_BASIS_KEYS = {
    "dataset": "scored_on",
    "data_sha256": "scored_data_sha256",
    "tokenizer": "scored_tokenizer",
    "generation": "scored_generation",
}
_METADATA_VALUE_LIMIT = 256


@dataclass(frozen=True)
class BestApproved:
    """The best comparable Approved value of a metric, its package, and how many Approved
    packages were left out as not comparable."""

    value: float | None = None
    package: str | None = None
    not_comparable: int = 0


def better(metric: str, value: float, than: float) -> bool:
    """Strictly better in the metric's direction."""
    return value > than if metric_direction(metric) == ">=" else value < than


def decide_gate(
    gate: Evaluation,
    metrics: Mapping[str, float] | float | None,
    *,
    best: Mapping[str, BestApproved] | None = None,
    basis: ScoringBasis | None = None,
    best_approved_value: float | None = None,
    best_approved_package: str | None = None,
) -> GateDecision:
    """The gate's decision and its reason. Every rule must hold (``exact_match >= 0.6``) and,
    for each ``must_beat_best_approved`` metric, the value must be strictly better than the best
    comparable Approved package's (none comparable: nothing to beat). A gate without rules still
    needs its metric to be reported.

    ``metrics`` may be the value of the gate's metric alone (the shorthand's one metric), and
    ``best_approved_value``/``best_approved_package`` the best package for it."""
    primary = gate.primary_metric()
    values = dict(metrics) if isinstance(metrics, Mapping) else {}
    if metrics is not None and not isinstance(metrics, Mapping):
        values[primary] = float(metrics)
    best = dict(best or {})
    if best_approved_value is not None or best_approved_package is not None:
        best.setdefault(primary, BestApproved(best_approved_value, best_approved_package))

    failures: list[str] = []
    rules: list[RuleResult] = []
    for rule in gate.gate_rules():
        value = values.get(rule.metric)
        held = value is not None and rule.holds(value)
        rules.append(RuleResult(rule=str(rule), metric=rule.metric, value=value, passed=held))
        if value is None:
            failures.append(f"the training job reported no {rule.metric}")
        elif not held:
            side = "above" if rule.op in ("<=", "<") else "below"
            failures.append(
                f"{rule.metric} {value:.4g} is {side} the threshold {rule.value:.4g} ({rule})"
            )
    comparisons: list[BestApprovedComparison] = []
    for metric in gate.must_beat_metrics():
        value = values.get(metric)
        found = best.get(metric, BestApproved())
        beats = value is not None and (found.value is None or better(metric, value, found.value))
        comparisons.append(
            BestApprovedComparison(
                metric=metric,
                value=value,
                best_approved_value=found.value,
                best_approved_package=found.package,
                not_comparable=found.not_comparable,
                passed=beats,
            )
        )
        if value is None:
            failures.append(f"the training job reported no {metric}")
        elif not beats:
            assert found.value is not None
            failures.append(
                f"{metric} {value:.4g} does not beat the best approved model ({found.value:.4g})"
            )
    if not rules and not comparisons and values.get(primary) is None:
        failures.append(f"the training job reported no {primary}")

    checked = list(dict.fromkeys([r.metric for r in rules] + [c.metric for c in comparisons]))
    shown = checked or [primary]
    if failures:
        reason = "; ".join(dict.fromkeys(failures))
    else:
        reason = (
            ", ".join(f"{m} {values[m]:.4g}" for m in shown if values.get(m) is not None)
            + " passed the gate"
        )
        unmatched = [c for c in comparisons if c.best_approved_value is None]
        if unmatched:
            left_out = sum(c.not_comparable for c in unmatched)
            reason += " (no comparable approved model to beat" + (
                f"; {left_out} approved scored on another basis)" if left_out else ")"
            )
    first_rule = rules[0] if rules else None
    first_best = comparisons[0] if comparisons else None
    metric = first_rule.metric if first_rule else first_best.metric if first_best else primary
    threshold = next((r.value for r in gate.gate_rules() if r.metric == metric), None)
    return GateDecision(
        metric=metric,
        value=values.get(metric),
        threshold=threshold,
        must_beat_best_approved=bool(comparisons),
        best_approved_value=first_best.best_approved_value if first_best else None,
        best_approved_package=first_best.best_approved_package if first_best else None,
        passed=not failures,
        reason=reason,
        rules=rules,
        best_approved=comparisons,
        basis=basis,
    )


def best_approved(
    sagemaker: SageMakerClient,
    group: str,
    metrics: list[str],
    basis: ScoringBasis | None,
) -> dict[str, BestApproved]:
    """The best value of each of ``metrics`` among the group's Approved packages scored on a
    basis comparable with ``basis`` (None: every package counts, as before scoring bases)."""
    found: dict[str, BestApproved] = {m: BestApproved() for m in metrics}
    if not metrics:
        return found
    paginator = sagemaker.get_paginator("list_model_packages")
    for page in paginator.paginate(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime"
    ):
        for summary in page.get("ModelPackageSummaryList", []):
            arn = summary["ModelPackageArn"]
            package = sagemaker.describe_model_package(ModelPackageName=arn)
            metadata = package.get("CustomerMetadataProperties", {})
            theirs = basis_from_metadata(metadata)
            for metric in metrics:
                raw = metadata.get(metric)
                if raw is None:
                    continue
                current = found[metric]
                if basis is not None and (theirs is None or not basis.comparable(theirs, metric)):
                    found[metric] = BestApproved(
                        current.value, current.package, current.not_comparable + 1
                    )
                    continue
                value = float(raw)
                if current.value is None or better(metric, value, current.value):
                    found[metric] = BestApproved(value, arn, current.not_comparable)
    return found


def basis_metadata(basis: ScoringBasis | None) -> dict[str, str]:
    """The basis as model package metadata (values at most 256 characters)."""
    if basis is None:
        return {}
    values = {key: getattr(basis, field) for field, key in _BASIS_KEYS.items()}
    return {k: str(v)[:_METADATA_VALUE_LIMIT] for k, v in values.items() if v is not None}


def basis_from_metadata(metadata: Mapping[str, str]) -> ScoringBasis | None:
    """A package's basis from its metadata; None for packages registered before bases."""
    dataset = metadata.get(_BASIS_KEYS["dataset"])
    data = metadata.get(_BASIS_KEYS["data_sha256"])
    tokenizer = metadata.get(_BASIS_KEYS["tokenizer"])
    if dataset not in ("test", "validation") or not data or not tokenizer:
        return None
    return ScoringBasis(
        dataset=dataset,
        data_sha256=data,
        tokenizer=tokenizer,
        generation=metadata.get(_BASIS_KEYS["generation"]),
    )


def pinned_basis(run: RunDocument) -> ScoringBasis:
    """The basis known without the job's report: the pinned held-out objects' ETags (content
    digests for single-part uploads), the base model for the tokenizer, the requested
    generation settings. Used when the job wrote no evaluation summary."""
    if "test" in run.datasets:
        dataset, objects, extra = "test", run.datasets["test"].objects, ""
    elif "validation" in run.datasets:
        dataset, objects, extra = "validation", run.datasets["validation"].objects, ""
    else:  # split off the training data by the job
        hp = run.training.hyperparameters
        dataset, objects = "validation", run.datasets["train"].objects
        extra = f"split {hp.get('validation_split', 'default')} seed {hp.get('seed', 'default')}"
    digest = hashlib.sha256()
    for etag, size in sorted((o.etag, o.size) for o in objects):
        digest.update(f"{etag}:{size}\n".encode())
    digest.update(extra.encode())
    generated = [m for m in run.evaluation.scored_metrics() if m not in ("eval_loss", "perplexity")]
    return ScoringBasis(
        dataset=dataset,
        data_sha256=f"etag:{digest.hexdigest()}",
        tokenizer=f"model:{run.base_model}",
        generation=run.evaluation.generation.describe() if generated else None,
    )
