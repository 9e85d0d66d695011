"""Suite-wide settings: offline, fake AWS credentials, quiet jsii."""

from __future__ import annotations

import os

# Set at import so every module (and moto, boto3, jsii) sees them before first use.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_TRACKING_URI": "",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# Synthesized apps are shared by the infra and workflow suites; each is built once per session.
import pytest

from tests.infra.synth import Synthesized, synthesize


@pytest.fixture(scope="session")
def dev() -> Synthesized:
    return synthesize("dev")


@pytest.fixture(scope="session")
def prod() -> Synthesized:
    return synthesize("prod")


@pytest.fixture(scope="session")
def local_templates() -> Synthesized:
    synthesized = synthesize("local")
    assert synthesized.validation_error is None
    return synthesized
