"""Base models without friction: JumpStart models resolved with the SageMaker SDK's own JumpStart
code against recorded metadata (moto's S3 stands in for the region's JumpStart bucket: the
boundary the SDK reads through), pinned into the request, and held by the launch function to
the region's JumpStart buckets and to the model's license."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune.base_models import JumpStartError, pin_base_model
from launch_run.logic import resolve_run
from runspec.request import RunRequestError, parse_run_request
from tests.lambdas.conftest import CHAT_ROW, REGION, Aws, make_settings

RECORDED = Path(__file__).parent / "jumpstart"
GEMMA = "huggingface-llm-gemma-7b-instruct"
FALCON = "huggingface-llm-falcon-7b-instruct-bf16"


@pytest.fixture
def jumpstart(aws: Aws) -> Aws:
    """The region's JumpStart content bucket with the recorded manifest and specs."""
    s3 = aws.client("s3")
    bucket = f"jumpstart-cache-prod-{REGION}"
    s3.create_bucket(Bucket=bucket)
    manifest = json.loads((RECORDED / "models_manifest.json").read_text())
    s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=json.dumps(manifest))
    for entry, specs in zip(manifest, ("specs_falcon.json", "specs_gemma.json"), strict=True):
        s3.put_object(Bucket=bucket, Key=entry["spec_key"], Body=(RECORDED / specs).read_bytes())
    return aws


def launch(aws: Aws, document: dict[str, Any], *, pin: bool = True) -> dict[str, Any]:
    """``finetune launch``: the CLI pins the base model, the launch logic resolves the run."""
    aws.put_jsonl("datasets/default/train.jsonl", [CHAT_ROW] * 4)
    pinned = pin_base_model(document, region=REGION) if pin else document
    run = resolve_run(
        pinned, aws.settings, execution_name=None, s3=aws.client("s3"), ecr=aws.client("ecr")
    )
    return run.to_state()


def model_channel(run: dict[str, Any]) -> dict[str, Any]:
    channels = {c["ChannelName"]: c for c in run["training"]["input_data_config"]}
    source: dict[str, Any] = channels["model"]["DataSource"]["S3DataSource"]
    return source


def test_the_sdk_pins_a_jumpstart_model_version_weights_and_license(jumpstart: Aws) -> None:
    pinned = pin_base_model({"base_model": f"jumpstart:{GEMMA}"}, region=REGION)

    assert pinned["jumpstart"] == {
        "model_id": GEMMA,
        "version": "1.1.0",
        # Licensed weights are in the gated bucket; the inference artifact is the model folder.
        "artifact_uri": f"s3://jumpstart-private-cache-prod-{REGION}/huggingface-llm/{GEMMA}/"
        "artifacts/inference-prepack/v1.0.0/",
        "eula_uri": f"s3://jumpstart-cache-prod-{REGION}/fmhMetadata/terms/gemmaTerms.txt",
    }
    assert parse_run_request(pinned).jumpstart is not None
    # A version asked for is the version pinned; an unknown model is named.
    with pytest.raises(JumpStartError, match="no model 'no-such-model'"):
        pin_base_model({"base_model": "jumpstart:no-such-model"}, region=REGION)


def test_a_licensed_model_is_refused_at_launch_without_accept_eula(jumpstart: Aws) -> None:
    with pytest.raises(RunRequestError) as refused:
        launch(jumpstart, {"base_model": f"jumpstart:{GEMMA}"})

    (problem,) = refused.value.problems
    assert problem.startswith(f"accept_eula: {GEMMA} is offered under an end-user license")
    assert "gemmaTerms.txt" in problem
    assert "set accept_eula: true" in problem


def test_accepted_license_travels_to_sagemaker_with_the_weights(jumpstart: Aws) -> None:
    run = launch(jumpstart, {"base_model": f"jumpstart:{GEMMA}@1.1.0", "accept_eula": True})

    source = model_channel(run)
    assert source["S3Uri"].startswith(f"s3://jumpstart-private-cache-prod-{REGION}/")
    assert source["ModelAccessConfig"] == {"AcceptEula": True}
    # The run records what it trained on: the id as asked, and the pinned version and weights.
    assert run["base_model"] == f"jumpstart:{GEMMA}@1.1.0"
    assert run["request"]["jumpstart"]["version"] == "1.1.0"


def test_an_open_model_needs_no_license_nor_egress(jumpstart: Aws) -> None:
    jumpstart.settings = make_settings(internet_egress=False)
    run = launch(jumpstart, {"base_model": f"jumpstart:{FALCON}"})

    source = model_channel(run)
    assert source["S3Uri"] == (
        f"s3://jumpstart-cache-prod-{REGION}/huggingface-llm/{FALCON}/artifacts/inference-prepack/"
        "v1.0.0/"
    )
    assert "ModelAccessConfig" not in source


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # Not pinned: the launch function has no SageMaker SDK to resolve it.
        ({"jumpstart": None}, "must be resolved before launch"),
        (
            {"jumpstart": {"artifact_uri": "s3://someone-elses-bucket/weights/"}},
            "jumpstart.artifact_uri: 's3://someone-elses-bucket/weights/' is not in the "
            "JumpStart buckets of us-east-1",
        ),
        ({"jumpstart": {"model_id": "other-model"}}, "is not the model of base_model"),
        ({"accept_eula": True, "base_model": "Qwen/Qwen2.5-0.5B-Instruct"}, "jumpstart: only for"),
    ],
)
def test_a_pin_is_held_to_the_platform_rules(
    jumpstart: Aws, changes: dict[str, Any], message: str
) -> None:
    document = pin_base_model({"base_model": f"jumpstart:{FALCON}"}, region=REGION)
    for key, value in changes.items():
        if isinstance(value, dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    with pytest.raises(RunRequestError) as refused:
        launch(jumpstart, document, pin=False)
    assert message in "; ".join(refused.value.problems)
