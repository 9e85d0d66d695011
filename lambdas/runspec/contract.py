"""The training code's hyperparameter contract, as data the launch function and the CLI read.

The training code (``training_code/llm_sft/hyperparameters.py``) owns the contract: names,
defaults, numeric bounds and choices. It ships in the training image and the Lambdas ship
without it, so the contract is generated into ``runspec/data/hyperparameters.json``
(``python -m runspec.contract``) and a test checks the committed file is current: change a
default or a bound in the training code and the suite says to regenerate; the run request,
the launch check and ``finetune estimate`` then use the new value.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = ["generate_contract"]


def generate_contract() -> dict[str, Any]:
    """Read the contract from the training code (a development-time import)."""
    from llm_sft import hyperparameters as training_contract

    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(training_contract.Hyperparameters):
        value = field.default
        defaults[field.name] = list(value) if isinstance(value, tuple) else value
    bounds = {
        name: {
            key: value
            for key, value in dataclasses.asdict(bound).items()
            if value is not None and value is not False and value not in ((), "")
        }
        for name, bound in training_contract.BOUNDS.items()
    }
    return {
        "source": "training_code/llm_sft/hyperparameters.py "
        "(generated: python -m runspec.contract)",
        "names": list(training_contract.HYPERPARAMETER_NAMES),
        "defaults": defaults,
        "bounds": json.loads(json.dumps(bounds)),
        "choices": {name: list(options) for name, options in training_contract.CHOICES.items()},
    }


if __name__ == "__main__":
    print(json.dumps(generate_contract(), indent=2))
