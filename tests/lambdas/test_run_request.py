"""The run request schema: defaults, examples, and every malformed request named by its field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune.local.moto_patches import FakeLambdaContext
from launch_run import handler as launch_handler
from runspec.request import RunRequest, RunRequestError, parse_run_request
from tests.lambdas.conftest import Aws

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "runs"


def test_empty_request_is_valid_and_documented_defaults_apply() -> None:
    request = parse_run_request({})
    assert request.schema_version == 1
    assert request.training.option == "custom-image"
    assert request.training.spot is True
    assert request.training.max_wait_seconds == 2 * request.training.max_runtime_seconds
    assert request.evaluation.metric == "eval_loss"
    assert request.deployment.enabled is False
    assert parse_run_request(None) == request


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.*")), ids=lambda p: p.name)
def test_every_example_request_is_valid(path: Path) -> None:
    document = (
        yaml.safe_load(path.read_text())
        if path.suffix in (".yaml", ".yml")
        else json.loads(path.read_text())
    )
    assert isinstance(parse_run_request(document), RunRequest)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"trainng": {}}, "trainng: unknown field (allowed: schema_version, run_name"),
        ({"trainng": {}}, "did you mean 'training'?"),
        # Found by the property test: names that look like pydantic's union tags.
        ({"none": 1}, "none: unknown field (allowed: schema_version"),
        ({"training": {"str": 1}}, "training.str: unknown field"),
        ({"training": {"instanc_type": "x"}}, "training.instanc_type: unknown field"),
        ({"training": {"instance_type": "g5"}}, "training.instance_type: 'g5' is not a SageMaker"),
        ({"training": {"spot": False, "max_wait_hours": 3}}, "training: max_wait_hours applies"),
        ({"training": {"max_runtime_hours": 10, "max_wait_hours": 5}}, "must be greater than"),
        ({"hyperparameters": {"lora_target_modules": []}}, "hyperparameters.lora_target_modules"),
        (
            {"hyperparameters": {"bf16": "maybe"}},
            "hyperparameters.bf16: Input should be a valid boolean",
        ),
        ({"base_model": "nope"}, "base_model: 'nope' is neither a Hub id"),
        ({"base_model": "s3://b/model"}, "end it with /"),
        ({"dataset": {"train": "http://x"}}, "dataset.train: 'http://x' is not an s3://"),
        ({"dataset": {"validation": "s3://b/v.jsonl"}}, "dataset.train: Field required"),
        ({"deployment": {"endpoint_name": "-bad"}}, "deployment.endpoint_name: '-bad' must be"),
        ({"tags": {"aws:x": "y"}}, "tags: tag key 'aws:x' is invalid"),
        ({"schema_version": 2}, "schema_version: Input should be 1"),
        ([1, 2], "(request): must be a JSON object, got list"),
    ],
)
def test_errors_name_the_field_and_the_rule(payload: object, expected: str) -> None:
    with pytest.raises(RunRequestError) as raised:
        parse_run_request(payload)
    assert expected in str(raised.value)


# -- property: 1,000 malformed requests through the launch function ------------------------

FIELDS: dict[str, list[str]] = {
    "": list(RunRequest.model_fields),
    **{
        name: list(field.annotation.model_fields)  # type: ignore[union-attr]
        for name, field in RunRequest.model_fields.items()
        if hasattr(field.annotation, "model_fields")
    },
    "dataset": ["train", "validation"],
}
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
VALID = {
    "experiment_name": "chat",
    "dataset": {"train": "s3://llmft-test-datasets/datasets/default/train.jsonl"},
    "training": {"instance_type": "ml.g5.2xlarge", "spot": True},
    "hyperparameters": {"lora_r": 8},
    "evaluation": {"threshold": 2.0},
    "deployment": {"enabled": False},
}


@st.composite
def malformed_requests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid request with one field made wrong (bad value or unknown name), and its path."""
    request: dict[str, Any] = json.loads(json.dumps(VALID))
    section = draw(st.sampled_from(sorted(FIELDS)))
    kind = draw(st.sampled_from(["unknown", "wrong"]))
    target: dict[str, Any] = request
    if section:
        if not isinstance(request.get(section), dict):
            request[section] = {}
        target = request[section]
    if kind == "unknown":
        key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
        if key in FIELDS[section]:
            key += "_x"
        target[key] = draw(JUNK)
    else:
        key = draw(st.sampled_from(FIELDS[section]))
        target[key] = draw(JUNK.filter(lambda v: not _valid_for(section, key, v)))
    return request, f"{section}.{key}" if section else key


def _valid_for(section: str, key: str, value: Any) -> bool:
    candidate = json.loads(json.dumps(VALID))
    if section:
        candidate.setdefault(section, {})
        if not isinstance(candidate[section], dict):
            candidate[section] = {}
        candidate[section][key] = value
    else:
        candidate[key] = value
    try:
        parse_run_request(json.loads(json.dumps(candidate, allow_nan=True)))
    except (RunRequestError, ValueError):
        return False
    return True


FIELD_PATHS = {
    f"{section}.{key}" if section else key for section, keys in FIELDS.items() for key in keys
}


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(case=malformed_requests(), action=st.sampled_from(["resolve", "start"]))
def test_malformed_requests_are_refused_naming_a_field_and_start_nothing(
    aws: Aws, case: tuple[dict[str, Any], str], action: str
) -> None:
    request, broken = case
    context = FakeLambdaContext(
        "launch", "arn:aws:lambda:us-east-1:123456789012:function:launch", 512, 60
    )
    environment = {**aws.settings.to_env(), "POWERTOOLS_TRACE_DISABLED": "true"}
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        with pytest.raises(launch_handler.RunRequestInvalid) as raised:
            launch_handler.handler({"action": action, "request": request}, context)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    message = str(raised.value)
    named = {problem.split(":", 1)[0] for problem in message.split("; ")}
    # The broken field itself, something inside it, or (for cross-field rules) its section.
    assert any(
        name == broken or name.startswith(broken + ".") or broken.startswith(name + ".")
        for name in named
    ), (broken, message)
    sfn = aws.client("stepfunctions")
    assert sfn.list_executions(stateMachineArn=aws.settings.state_machine_arn)["executions"] == []
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_committed_json_schema_is_current() -> None:
    from runspec.schema import run_request_schema

    committed = json.loads((EXAMPLES.parents[1] / "docs" / "run-request.schema.json").read_text())
    assert committed == run_request_schema(), "regenerate: python -m runspec.schema > docs/..."
