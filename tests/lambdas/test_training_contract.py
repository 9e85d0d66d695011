"""The launch function and the CLI read the training code's hyperparameter contract from a
generated file; it must be the training code's current contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runspec.contract import generate_contract
from runspec.defaults import hyperparameter_names, training_defaults
from runspec.request import Hyperparameters as RequestHyperparameters
from runspec.request import RunRequestError, parse_run_request

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


def _value_strategy(name: str) -> Any:
    from llm_sft.hyperparameters import BOUNDS

    bound = BOUNDS[name]
    low = -10.0 if bound.minimum is None else bound.minimum - 2
    high = 2.0 * (bound.maximum or 10) + 2
    annotation = str(RequestHyperparameters.model_fields[name].annotation)
    if "int" in annotation:
        return st.integers(min_value=int(low), max_value=int(high))
    return st.floats(min_value=low, max_value=high, allow_nan=False)


def _request_hyperparameters() -> Any:
    from llm_sft.hyperparameters import BOUNDS, CHOICES

    fields = {
        name: st.none() | _value_strategy(name)
        for name in RequestHyperparameters.model_fields
        if name in BOUNDS
    }
    fields.update(
        {
            name: st.none() | st.sampled_from([*CHOICES[name], "other"])
            for name in RequestHyperparameters.model_fields
            if name in CHOICES
        }
    )
    return st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=_request_hyperparameters())
def test_every_request_the_launch_accepts_parses_in_the_training_code(
    values: dict[str, Any],
) -> None:
    """One contract: what the run request accepts, the job accepts; what the job refuses, the
    request refuses before anything starts."""
    from llm_sft.hyperparameters import HyperparameterError, parse_hyperparameters

    values = {k: v for k, v in values.items() if v is not None}
    try:
        request = parse_run_request({"hyperparameters": values})
    except RunRequestError:
        request = None
    strings = {name: str(value) for name, value in values.items()}
    try:
        parse_hyperparameters({"model_id": "org/model", **strings})
        job_accepts = True
    except HyperparameterError:
        job_accepts = False
    if request is not None:
        sagemaker = request.hyperparameters.as_sagemaker_strings()
        parse_hyperparameters({"model_id": "org/model", **sagemaker})  # never raises
    else:
        # The request is refused: either the job would refuse it too, or the request is stricter
        # about types (a float for an integer field, which the job's string parser accepts).
        assert not job_accepts or any(
            isinstance(values[name], float)
            and "int" in str(RequestHyperparameters.model_fields[name].annotation)
            for name in values
        )
