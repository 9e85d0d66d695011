"""The launch function and the CLI read the training code's hyperparameter contract from a
generated file; it must be the training code's current contract."""

from __future__ import annotations

import json
from pathlib import Path

from runspec.contract import generate_contract
from runspec.defaults import hyperparameter_names, training_defaults

REPO = Path(__file__).resolve().parents[2]


def test_the_generated_contract_is_current() -> None:
    committed = json.loads((REPO / "lambdas/runspec/data/hyperparameters.json").read_text())
    assert committed == generate_contract(), (
        "training_code's hyperparameters changed: regenerate with "
        "`python -m runspec.contract > lambdas/runspec/data/hyperparameters.json`"
    )


def test_defaults_are_the_training_codes() -> None:
    from llm_sft.hyperparameters import Hyperparameters

    training = Hyperparameters()
    defaults = training_defaults()
    for name in defaults.__dataclass_fields__:
        assert getattr(defaults, name) == getattr(training, name), name
    assert "model_id" in hyperparameter_names()
