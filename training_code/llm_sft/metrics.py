"""The metric log-line format and the SageMaker MetricDefinitions that parse it.

Pure standard library: the CDK stacks import `METRIC_DEFINITIONS` from here, and the trainer
prints with `format_metric_line` / `format_final_line`, so the printer and the parser are one
module and cannot drift apart.

Lines look like::

    METRIC step=20 train_loss=1.23457 learning_rate=0.000190983 tokens_per_second=5321.2 epoch=0.5
    METRIC step=40 eval_loss=1.1 epoch=1
    METRIC final eval_loss=1.1 perplexity=3.00417 train_loss=1.2 tokens_per_second=5100
    METRIC evaluation eval_loss=1.3 perplexity=3.6693 exact_match=0.62 token_f1=0.71 rougeL=0.7

The evaluation line (llm_sft.evaluation) comes last, from the test set when the run has one: its
values are the job's final ones (SageMaker keeps the last value of each metric).

SageMaker applies every regex to every log line and keeps the first capture group, so each
regex is anchored on `METRIC step=N` / `METRIC final` and on the space before the field name
(so that `eval_loss` never matches inside `train_loss`), and captures only a decimal number
(a `nan` value emits nothing rather than a bogus point).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "METRIC"

# Order of fields on a step line; the brief's contract, consumed by regexes and humans.
STEP_FIELDS: tuple[str, ...] = (
    "train_loss",
    "eval_loss",
    "learning_rate",
    "tokens_per_second",
    "epoch",
)
FINAL_FIELDS: tuple[str, ...] = ("eval_loss", "perplexity", "train_loss", "tokens_per_second")
EVALUATION_FIELDS: tuple[str, ...] = (
    "eval_loss",
    "perplexity",
    "exact_match",
    "token_f1",
    "rougeL",
    "json_valid",
    "judge_score",
)

_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def _regex(name: str) -> str:
    # Fields are space-separated after `step=N` or `final`; requiring the space before the name
    # (no lookbehind, no `\b`) keeps the pattern portable across regex engines.
    return rf"{PREFIX} (?:step=[0-9]+|final|evaluation)(?: \S+)*? {name}={_NUMBER}"


METRIC_NAMES: tuple[str, ...] = (
    "train_loss",
    "eval_loss",
    "perplexity",
    "learning_rate",
    "tokens_per_second",
    "epoch",
    "exact_match",
    "token_f1",
    "rougeL",
    "json_valid",
    "judge_score",
)

METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": _regex(name)} for name in METRIC_NAMES
]


def format_value(value: float) -> str:
    """Short, regex-friendly: `{:.6g}` never prints thousands separators or padding."""
    if isinstance(value, bool):
        raise TypeError("metric values are numbers, not booleans")
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _fields(values: Mapping[str, float | None], order: Iterable[str]) -> str:
    parts = []
    for name in order:
        value = values.get(name)
        if value is not None:
            parts.append(f"{name}={format_value(value)}")
    return " ".join(parts)


def format_metric_line(step: int, **values: float | None) -> str:
    """One per logging step: `METRIC step=<int> <field>=<float> ...`; None fields are left out."""
    unknown = set(values) - set(STEP_FIELDS)
    if unknown:
        raise ValueError(f"unknown metric field(s): {sorted(unknown)}")
    body = _fields(values, STEP_FIELDS)
    return f"{PREFIX} step={int(step)}" + (f" {body}" if body else "")


def format_final_line(**values: float | None) -> str:
    """Once at the end: `METRIC final eval_loss=... perplexity=... train_loss=... ...`."""
    unknown = set(values) - set(FINAL_FIELDS)
    if unknown:
        raise ValueError(f"unknown metric field(s): {sorted(unknown)}")
    body = _fields(values, FINAL_FIELDS)
    return f"{PREFIX} final" + (f" {body}" if body else "")


def format_evaluation_line(**values: float | None) -> str:
    """After training, from the evaluation: `METRIC evaluation eval_loss=... exact_match=...`."""
    unknown = set(values) - set(EVALUATION_FIELDS)
    if unknown:
        raise ValueError(f"unknown metric field(s): {sorted(unknown)}")
    body = _fields(values, EVALUATION_FIELDS)
    return f"{PREFIX} evaluation" + (f" {body}" if body else "")


@dataclass(frozen=True)
class MetricRecord:
    """A parsed METRIC line: `step` is None on the final line."""

    step: int | None
    final: bool
    values: dict[str, float] = field(default_factory=dict)


_LINE = re.compile(
    rf"{PREFIX} (?:step=(?P<step>[0-9]+)|(?P<final>final|evaluation))(?P<rest>(?: \S+=\S+)*)"
)


def parse_metric_line(line: str) -> MetricRecord | None:
    """The record in a log line, or None when the line holds no METRIC record."""
    match = _LINE.search(line)
    if match is None:
        return None
    values: dict[str, float] = {}
    for pair in match.group("rest").split():
        name, _, text = pair.partition("=")
        try:
            values[name] = float(text)
        except ValueError:
            continue
    step = match.group("step")
    return MetricRecord(
        step=int(step) if step is not None else None,
        final=match.group("final") is not None,
        values=values,
    )


def parse_metric_lines(lines: Iterable[str]) -> list[MetricRecord]:
    return [record for record in map(parse_metric_line, lines) if record is not None]


def apply_metric_definitions(
    lines: Iterable[str], definitions: Iterable[Mapping[str, str]] = METRIC_DEFINITIONS
) -> dict[str, list[float]]:
    """What SageMaker would extract: for each definition, `re.search` on every line."""
    compiled = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
    out: dict[str, list[float]] = {name: [] for name, _ in compiled}
    for line in lines:
        for name, regex in compiled:
            match = regex.search(line)
            if match is not None:
                out[name].append(float(match.group(1)))
    return out
