"""The training code's hyperparameter contract, as data the launch function and the CLI read.

The training code (``training_code/llm_sft/hyperparameters.py``) owns the contract: names and
defaults. It ships in the training image and the Lambdas ship without it, so the contract is
generated into ``runspec/data/hyperparameters.json`` (``python -m runspec.contract``) and a test
checks the committed file is current: change a default in the training code and the suite says
to regenerate, and then the launch check and ``finetune estimate`` use the new value.
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
    return {
        "source": "training_code/llm_sft/hyperparameters.py "
        "(generated: python -m runspec.contract)",
        "names": list(training_contract.HYPERPARAMETER_NAMES),
        "defaults": defaults,
    }


if __name__ == "__main__":
    print(json.dumps(generate_contract(), indent=2))
