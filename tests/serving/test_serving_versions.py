"""The versions the serving contract was verified with, on both sides, are the ones in use.

A bump of the training stack (training_code/requirements.txt, requirements-dev.txt), of the
serving image (stacks/components/huggingface_images.py) or of the serving pins fails here until
llm_sft.serving_contract is updated - and updating it rebuilds the serving environment and
re-runs tests/serving/test_serving_compat.py against the new pins.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from tests.serving.conftest import REPO

pytestmark = pytest.mark.serving_contract


def _pins(requirements: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("requirements", ["training_code/requirements.txt", "requirements-dev.txt"])
def test_training_stack_pins_are_the_verified_ones(requirements: str) -> None:
    from llm_sft.serving_contract import TRAINING_STACK_VERIFIED

    pins = _pins(REPO / requirements)
    for package, version in TRAINING_STACK_VERIFIED.items():
        assert pins.get(package) == version, (
            f"{requirements} pins {package}=={pins.get(package)}; the serving contract was"
            f" verified with {version}: re-run tests/serving and update TRAINING_STACK_VERIFIED"
        )


def test_installed_training_stack_is_the_verified_one() -> None:
    from llm_sft.serving_contract import TRAINING_STACK_VERIFIED

    installed = {package: metadata.version(package) for package in TRAINING_STACK_VERIFIED}
    assert installed == dict(TRAINING_STACK_VERIFIED)


def test_serving_stack_is_the_deployed_image() -> None:
    from llm_sft.serving_contract import SERVING_STACK
    from stacks.components import huggingface_images

    assert SERVING_STACK.server_version == huggingface_images.SERVING_VERSION, (
        "the workflow deploys another serving image than the contract was verified with:"
        " update SERVING_STACK (its pins) in llm_sft.serving_contract and re-run tests/serving"
    )
    tag = huggingface_images.huggingface_tgi_image().repository_and_tag
    assert tag.startswith(SERVING_STACK.image + "-"), tag


def test_serving_environment_has_the_serving_pins(serving_env: Path) -> None:
    from llm_sft.serving_contract import SERVING_STACK

    installed = {
        dist.metadata["Name"].lower(): dist.version
        for dist in metadata.distributions(path=[str(serving_env)])
    }
    assert installed == dict(SERVING_STACK.packages), (
        f"{serving_env} holds {installed}: run `make setup-serving`"
    )


def test_every_deployment_gets_the_contracts_serving_environment() -> None:
    from llm_sft.serving_contract import SERVING_ENVIRONMENT
    from runspec.serving import CONTRACT_ENVIRONMENT

    assert dict(SERVING_ENVIRONMENT).items() <= CONTRACT_ENVIRONMENT.items()
