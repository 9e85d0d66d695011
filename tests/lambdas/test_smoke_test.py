"""Smoke test: the endpoint answers, and computes what training computed for the reference.

The endpoint is a fake sagemaker-runtime client answering in TGI's shape; the reference sits in
(moto) S3 next to the model, as the training job leaves it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from smoke_test import handler as smoke_handler
from smoke_test import logic
from tests.lambdas.conftest import Aws

ENDPOINT = "llmft-test-default"
MODEL_FOLDER = "models/run-1/run-1-job/output/model"

# A reference as llm_sft.serving_reference writes it: 8 tokens, the last 3 are the target.
REFERENCE: dict[str, Any] = {
    "format": 1,
    "source": "validation.jsonl:3",
    "held_out": True,
    "inputs": "<|user|>\nhi</s>\n<|assistant|>\nhello</s>\n",
    "input_ids": [1, 5, 9, 2, 6, 11, 12, 2],
    "token_logprobs": [None, -3.0, -2.5, -0.5, -1.0, -1.2, -0.8, -0.1],
    "target_positions": [5, 6, 7],
    "loss": (1.2 + 0.8 + 0.1) / 3,
    "all_positions_loss": 1.3,
    "matches_training_encoding": True,
    "dtype": "bfloat16",
    "device": "cuda",
}


def tgi_answer(
    ids: list[int], logprobs: list[float | None], text: str = "Hello!"
) -> list[dict[str, Any]]:
    """TGI's /invocations answer with decoder_input_details (router/src/lib.rs, v3.3.6)."""
    return [
        {
            "generated_text": text,
            "details": {
                "finish_reason": "length",
                "generated_tokens": 1,
                "seed": None,
                "prefill": [
                    {"id": i, "text": f"t{i}", "logprob": p}
                    for i, p in zip(ids, logprobs, strict=True)
                ],
                "tokens": [{"id": 7, "text": "!", "logprob": -0.3, "special": False}],
            },
        }
    ]


class FakeEndpoint:
    """sagemaker-runtime: answers generation requests with text, scoring requests via `score`."""

    def __init__(self, score: Callable[[dict[str, Any]], Any]) -> None:
        self.score = score
        self.requests: list[dict[str, Any]] = []

    def invoke_endpoint(self, *, EndpointName: str, Body: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803
        request = json.loads(Body)
        self.requests.append(request)
        if request["parameters"].get("decoder_input_details"):
            answer = self.score(request)
        else:
            answer = [{"generated_text": "Hello! Nice to meet you."}]
        return {"Body": io.BytesIO(json.dumps(answer).encode())}


def served_as_trained(request: dict[str, Any]) -> Any:
    # bfloat16 serving moves each logprob a little; the mean stays within tolerance.
    noisy = [None if p is None else p + 0.01 for p in REFERENCE["token_logprobs"]]
    return tgi_answer(REFERENCE["input_ids"], noisy)


@pytest.fixture
def artifacts(aws: Aws) -> str:
    """The model folder in the artifacts bucket, with its reference."""
    aws.put(
        f"{MODEL_FOLDER}/serving_reference.json",
        json.dumps(REFERENCE),
        bucket=aws.settings.artifacts_bucket,
    )
    return f"s3://{aws.settings.artifacts_bucket}/{MODEL_FOLDER}/"


def run(endpoint: FakeEndpoint, aws: Aws, model_artifacts: str | None) -> dict[str, Any]:
    return logic.smoke_test(
        endpoint, ENDPOINT, s3=aws.client("s3"), model_artifacts=model_artifacts
    )


def test_a_model_served_as_trained_passes(aws: Aws, artifacts: str) -> None:
    endpoint = FakeEndpoint(served_as_trained)
    result = run(endpoint, aws, artifacts)
    assert result["generated_text"] == "Hello! Nice to meet you."
    assert result["scored_tokens"] == 3
    assert result["served_loss"] == pytest.approx(REFERENCE["loss"] - 0.01)
    assert result["reference_held_out"] is True
    scoring = endpoint.requests[1]
    assert scoring == {
        "inputs": REFERENCE["inputs"],
        "parameters": {
            "decoder_input_details": True,
            "details": True,
            "max_new_tokens": 1,
            "do_sample": False,
            "return_full_text": False,
        },
    }


def test_a_model_that_computes_something_else_fails(aws: Aws, artifacts: str) -> None:
    """Same tokens, other log-probabilities: e.g. served with the wrong rope base."""
    wrong = [None if p is None else p - 0.8 for p in REFERENCE["token_logprobs"]]
    endpoint = FakeEndpoint(lambda _: tgi_answer(REFERENCE["input_ids"], wrong))
    with pytest.raises(logic.SmokeTestFailed, match="computes another model than training") as e:
        run(endpoint, aws, artifacts)
    assert "difference +0.8000" in str(e.value)


def test_a_different_tokenization_fails_naming_the_position(aws: Aws, artifacts: str) -> None:
    ids = [1, 1, *REFERENCE["input_ids"][1:]]  # e.g. a second BOS
    endpoint = FakeEndpoint(lambda _: tgi_answer(ids, [None] * len(ids)))
    with pytest.raises(logic.SmokeTestFailed, match="other token ids than training") as e:
        run(endpoint, aws, artifacts)
    assert "first difference at position 1" in str(e.value)


def test_missing_reference_fails_clearly_without_calling_the_endpoint(aws: Aws) -> None:
    endpoint = FakeEndpoint(served_as_trained)
    missing = f"s3://{aws.settings.artifacts_bucket}/models/old-run/output/model"
    with pytest.raises(logic.SmokeTestFailed, match="no serving reference at s3://") as e:
        run(endpoint, aws, missing)
    assert f"{missing}/serving_reference.json" in str(e.value)
    assert endpoint.requests == []


def test_without_model_artifacts_only_generation_is_checked(aws: Aws) -> None:
    endpoint = FakeEndpoint(served_as_trained)
    result = run(endpoint, aws, None)
    assert result == {
        "endpoint_name": ENDPOINT,
        "prompt": logic.SMOKE_PROMPT,
        "generated_text": "Hello! Nice to meet you.",
    }
    assert len(endpoint.requests) == 1


def test_no_prompt_logprobs_names_the_container_setting(aws: Aws, artifacts: str) -> None:
    """TGI 3 without ENABLE_PREFILL_LOGPROBS answers with an empty prefill."""
    endpoint = FakeEndpoint(lambda _: [{"generated_text": "x", "details": {"prefill": []}}])
    with pytest.raises(logic.SmokeTestFailed, match="ENABLE_PREFILL_LOGPROBS=true"):
        run(endpoint, aws, artifacts)


def test_prefix_cached_positions_are_skipped_but_not_all(aws: Aws, artifacts: str) -> None:
    logprobs = list(REFERENCE["token_logprobs"])
    some_cached = [None] * 6 + logprobs[6:]  # 2 of 3 targets scored: enough
    endpoint = FakeEndpoint(lambda _: tgi_answer(REFERENCE["input_ids"], some_cached))
    assert run(endpoint, aws, artifacts)["scored_tokens"] == 2
    all_cached = [None] * 7 + logprobs[7:]  # 1 of 3: too few
    endpoint = FakeEndpoint(lambda _: tgi_answer(REFERENCE["input_ids"], all_cached))
    with pytest.raises(logic.SmokeTestFailed, match="1 of 3 target tokens"):
        run(endpoint, aws, artifacts)


def test_nan_logprobs_fail(aws: Aws, artifacts: str) -> None:
    """A broken model's NaNs come back as null (serde): too few tokens scored, not a pass."""
    nan = [None] + [math.nan] * 7
    endpoint = FakeEndpoint(lambda _: tgi_answer(REFERENCE["input_ids"], nan))
    with pytest.raises(logic.SmokeTestFailed, match="0 of 3 target tokens"):
        run(endpoint, aws, artifacts)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({**REFERENCE, "format": 2}, "has format 2"),
        ({**REFERENCE, "target_positions": [0]}, "inconsistent"),
        ({**REFERENCE, "token_logprobs": [None, -1.0]}, "inconsistent"),
        ({"format": 1}, "malformed"),
    ],
)
def test_a_bad_reference_fails_clearly(aws: Aws, reference: dict[str, Any], message: str) -> None:
    aws.put(
        f"{MODEL_FOLDER}/serving_reference.json",
        json.dumps(reference),
        bucket=aws.settings.artifacts_bucket,
    )
    with pytest.raises(logic.SmokeTestFailed, match=message):
        run(
            FakeEndpoint(served_as_trained),
            aws,
            f"s3://{aws.settings.artifacts_bucket}/{MODEL_FOLDER}",
        )


def test_an_archive_is_refused(aws: Aws) -> None:
    with pytest.raises(logic.SmokeTestFailed, match="uncompressed model folder"):
        run(FakeEndpoint(served_as_trained), aws, "s3://bucket/models/run/output/model.tar.gz")


def test_an_endpoint_without_text_fails(aws: Aws) -> None:
    endpoint = FakeEndpoint(served_as_trained)
    endpoint.invoke_endpoint = lambda **_: {"Body": io.BytesIO(b'[{"generated_text": ""}]')}  # type: ignore[method-assign]
    with pytest.raises(logic.SmokeTestFailed, match="without generated text"):
        run(endpoint, aws, None)


def test_handler_accepts_model_artifacts(
    aws: Aws, artifacts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetune.local.moto_patches import FakeLambdaContext

    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    endpoint = FakeEndpoint(served_as_trained)
    monkeypatch.setattr(smoke_handler, "_runtime", lambda: endpoint)
    monkeypatch.setattr(smoke_handler, "_s3", lambda: aws.client("s3"))
    context = FakeLambdaContext(
        "smoke", "arn:aws:lambda:us-east-1:123456789012:function:smoke", 256, 120
    )
    result = smoke_handler.handler(
        {"endpoint_name": ENDPOINT, "model_artifacts": artifacts}, context
    )
    assert result["model_artifacts"] == artifacts
    assert result["scored_tokens"] == 3
    with pytest.raises(Exception, match="model_artifacts"):
        smoke_handler.handler({"endpoint_name": ENDPOINT, "model_artifacts": "models/x"}, context)
