"""Task metrics on fixed predictions, against values computed by hand."""

from __future__ import annotations

import pytest

from llm_sft.scoring import (
    aggregate,
    exact_match,
    json_valid,
    normalize,
    rouge_l,
    score_example,
    token_f1,
)


def test_normalization_is_squad_s_and_unicode_aware() -> None:
    assert normalize("The Cat, sat!") == "cat sat"
    assert normalize("  A   man\tan  apple ") == "man apple"
    assert normalize("Café — «Olé»!") == "café olé"
    assert normalize("ＡＢＣ") == "abc"  # NFKC: full-width letters


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The answer is 42.", "answer is 42", 1.0),
        ("answer: 42", "42", 0.0),
        ("", "", 1.0),
        ("Grüße aus Köln", "grüße aus köln!", 1.0),
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # [cat sat on mat] vs [cat sat on hat]: 3 in common, P = R = 3/4.
        ("the cat sat on the mat", "a cat sat on a hat", 0.75),
        # [paris] vs [paris france]: 1 in common, P = 1, R = 1/2, F1 = 2/3.
        ("Paris", "Paris, France", 2 / 3),
        # Counts matter: [yes yes] vs [yes]: 1 in common, P = 1/2, R = 1, F1 = 2/3.
        ("yes yes", "yes", 2 / 3),
        ("nothing shared", "entirely different", 0.0),
        ("", "something", 0.0),
        ("", "", 1.0),
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # [cat sat on mat] vs [cat on mat sat]: LCS cat-on-mat = 3, P = R = 3/4.
        ("cat sat on mat", "cat on the mat sat", 0.75),
        # [w x y z] vs [w y]: LCS 2, P = 2/4, R = 2/2, F = 2/3.
        ("w x y z", "w y", 2 / 3),
        ("identical words here", "Identical words here.", 1.0),
        ("x", "y", 0.0),
    ],
)
def test_rouge_l_is_rouge_score_s_on_normalized_words(
    prediction: str, reference: str, expected: float
) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_rouge_l_handles_text_rouge_score_s_own_tokenizer_drops() -> None:
    # rouge-score's default tokenizer keeps only [a-z0-9]: these would score 0.
    assert rouge_l("Привет мир", "привет мир") == 1.0


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [('{"a": 1}', 1.0), ("[1, 2]", 1.0), (' {"a": 1} \n', 1.0), ("42", 0.0), ('{"a":', 0.0)],
)
def test_json_valid_counts_objects_and_arrays(prediction: str, expected: float) -> None:
    assert json_valid(prediction) == expected


def test_scores_of_an_example_and_their_means() -> None:
    first = score_example("Paris", "Paris", ["exact_match", "token_f1", "json_valid"])
    second = score_example("Lyon", "Paris", ["exact_match", "token_f1", "json_valid"])
    assert first == {"exact_match": 1.0, "token_f1": 1.0, "json_valid": 0.0}
    means = aggregate([first, second, {"exact_match": None}], ["exact_match", "token_f1", "x"])
    assert means == {"exact_match": 0.5, "token_f1": 0.5}
