"""Configuration: every environment is valid, and bad input stops synth naming the key."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from stacks.config import ENVIRONMENTS, ConfigError, ExistingVpc, load_config
from tests.infra.synth import REPO


def test_dev_is_the_default_and_environment_agnostic() -> None:
    config = load_config(None)
    assert config.env_name == "dev"
    assert config.account is None
    assert config.region is None


def test_prod_example_pins_account_region_and_disables_egress() -> None:
    config = load_config("prod")
    assert config.account is not None
    assert config.region is not None
    assert config.internet_egress is False
    assert config.existing_vpc is not None


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config("dev").prefix = "other"  # type: ignore[misc]


def test_unknown_environment_names_the_key_and_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"env: unknown environment 'staging'; known: dev, local, prod"
    ):
        load_config("staging")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prefix": "LLM_FT"}, r"env 'dev': prefix: 'LLM_FT' is invalid"),
        ({"account": "12345"}, r"env 'dev': account: '12345' is invalid: expected 12 digits"),
        ({"region": "mars-1"}, r"env 'dev': region: 'mars-1' is invalid"),
        ({"vpc_cidr": "10.0.0.0/33"}, r"env 'dev': vpc_cidr: '10.0.0.0/33' is invalid"),
        ({"vpc_cidr": "10.0.0.0/8"}, r"env 'dev': vpc_cidr: '10.0.0.0/8' is invalid"),
        ({"studio_users": ("ok", "not ok")}, r"env 'dev': studio_users: 'not ok' is invalid"),
        ({"studio_users": ("a", "a")}, r"env 'dev': studio_users: 'a' is invalid: expected unique"),
        ({"training_instance_type": "g5.2xlarge"}, r"training_instance_type: 'g5.2xlarge'"),
        ({"training_instance_type": "ml.m5.large"}, r"one of allowed_training_instance_types"),
        ({"log_retention_days": 42}, r"env 'dev': log_retention_days: 42 is invalid"),
        ({"checkpoint_expiry_days": 0}, r"env 'dev': checkpoint_expiry_days: 0 is invalid"),
        ({"studio_idle_timeout_minutes": 1}, r"studio_idle_timeout_minutes: 1 is invalid"),
        ({"model_approval_status": "Rejected"}, r"model_approval_status: 'Rejected' is invalid"),
        ({"mlflow_enabled": "yes"}, r"env 'dev': mlflow_enabled: 'yes' is invalid"),
        ({"notification_emails": ("nobody",)}, r"notification_emails: 'nobody' is invalid"),
        ({"training_capacity_retries": 6}, r"training_capacity_retries: 6 is invalid"),
        ({"training_capacity_backoff_minutes": 61}, r"training_capacity_backoff_minutes: 61 "),
    ],
)
def test_invalid_value_names_the_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(ENVIRONMENTS["dev"], **change)  # type: ignore[arg-type]


def test_existing_vpc_needs_one_subnet_per_zone() -> None:
    vpc = ExistingVpc(
        vpc_id="vpc-0123456789abcdef0",
        availability_zones=("eu-west-1a", "eu-west-1b"),
        private_subnet_ids=("subnet-0123456789abcdef0",),
        private_subnet_route_table_ids=("rtb-0123456789abcdef0",),
        cidr="10.0.0.0/16",
    )
    with pytest.raises(ConfigError, match=r"existing_vpc.private_subnet_ids: .* one subnet per"):
        dataclasses.replace(ENVIRONMENTS["prod"], existing_vpc=vpc)


def test_synth_with_an_unknown_env_stops_with_one_line() -> None:
    environment = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"env": "staging"})}
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "cdk synth stopped: env: unknown environment 'staging'; known: dev, local, prod"
    )
