"""The functions' settings: one typed declaration read back from the environment the stack
writes (every field, its type and its default in one place)."""

from __future__ import annotations

import pytest

from runspec.settings import PlatformSettings, SettingsError
from tests.lambdas.conftest import make_settings


def test_the_environment_the_stack_writes_reads_back_the_same_settings() -> None:
    settings = make_settings(
        judge_model_ids=("anthropic.claude-3-haiku-20240307-v1:0",),
        allow_trust_remote_code=True,
        endpoint_poll_seconds=5,
    )
    assert PlatformSettings.from_env(settings.to_env()) == settings


def test_optional_variables_take_their_declared_defaults() -> None:
    environment = make_settings().to_env()
    for name in ("FT_MAX_TRAINING_INSTANCES", "FT_JUDGE_MODEL_IDS", "FT_KMS_KEY_ARN"):
        del environment[name]
    settings = PlatformSettings.from_env(environment)
    assert (settings.max_training_instances, settings.judge_model_ids) == (1, ())


def test_a_missing_required_variable_is_named() -> None:
    environment = make_settings().to_env()
    del environment["FT_ARTIFACTS_BUCKET"]
    del environment["FT_PREFIX"]
    with pytest.raises(SettingsError, match="lacks FT_PREFIX, FT_ARTIFACTS_BUCKET"):
        PlatformSettings.from_env(environment)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FT_ENDPOINT_POLL_SECONDS", "sixty"),
        ("FT_INTERNET_EGRESS", "maybe"),
        ("FT_ALLOWED_TRAINING_INSTANCE_TYPES", "ml.g5.xlarge"),
    ],
)
def test_a_malformed_variable_is_refused_naming_it(variable: str, value: str) -> None:
    environment = {**make_settings().to_env(), variable: value}
    with pytest.raises(SettingsError, match=variable):
        PlatformSettings.from_env(environment)


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        make_settings(unexpected="x")
