"""Task metrics of generated answers against reference answers (no torch: unit-testable alone).

- ``exact_match``: the normalized answer equals the normalized reference (1 or 0).
- ``token_f1``: F1 of the normalized words in common (bag of words), as SQuAD scores answers.
- ``rougeL``: ROUGE-L F-measure (longest common subsequence of words), Google's
  ``rouge-score`` implementation, on the same words.
- ``json_valid``: the answer (surrounding whitespace removed) is a JSON object or array, for
  structured-output tasks.

Normalization is SQuAD's (the reference evaluation script of SQuAD v1.1): case folded,
punctuation removed, the English articles a/an/the dropped, whitespace collapsed; here Unicode
aware (NFKC, every Unicode punctuation character), so scores are independent of the model's
tokenizer and work beyond ASCII (rouge-score's own tokenizer keeps only [a-z0-9]). Each metric
of a test set is the mean over its examples.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "GENERATED_METRICS",
    "ExampleScores",
    "aggregate",
    "exact_match",
    "json_valid",
    "normalize",
    "rouge_l",
    "score_example",
    "token_f1",
    "words",
]

GENERATED_METRICS = ("exact_match", "token_f1", "rougeL", "json_valid")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD's answer normalization, Unicode aware."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = words(prediction), words(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


class _Words:
    """The tokenizer rouge-score calls: the normalized words."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


_SCORER = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge-score), on normalized words."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def json_valid(prediction: str) -> float:
    try:
        value = json.loads(prediction.strip())
    except ValueError:
        return 0.0
    return float(isinstance(value, dict | list))


_SCORERS = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rougeL": rouge_l,
}


@dataclass(frozen=True)
class ExampleScores:
    """One test example: what was asked, expected and generated, and its scores."""

    source: str
    prompt: str
    reference: str
    prediction: str
    scores: dict[str, float | None] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        return {
            "source": self.source,
            "prompt": self.prompt,
            "reference": self.reference,
            "prediction": self.prediction,
            **self.scores,
        }


def score_example(prediction: str, reference: str, metrics: Iterable[str]) -> dict[str, float]:
    """The generated metrics (of ``metrics``) for one answer."""
    scores: dict[str, float] = {}
    for metric in metrics:
        if metric == "json_valid":
            scores[metric] = json_valid(prediction)
        elif metric in _SCORERS:
            scores[metric] = _SCORERS[metric](prediction, reference)
    return scores


def aggregate(
    per_example: Sequence[Mapping[str, float | None]], metrics: Iterable[str]
) -> dict[str, float]:
    """The mean of each metric over the examples that have it (a metric no example has is
    left out)."""
    means: dict[str, float] = {}
    for metric in metrics:
        values = [s[metric] for s in per_example if s.get(metric) is not None]
        if values:
            means[metric] = sum(v for v in values if v is not None) / len(values)
    return means
