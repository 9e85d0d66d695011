"""The Bedrock judge: its Converse requests as botocore's model documents them, grades parsed,
a clear error when the model is not enabled."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from finetune.local.iam.actions import authorizations
from finetune.local.request_shapes import constraint_violations
from llm_sft.judge import JudgeError, converse_request, judge_answers, parse_grade

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def _client() -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )


def _reply(text: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 50, "outputTokens": 2, "totalTokens": 52},
        "metrics": {"latencyMs": 120},
    }


def test_requests_satisfy_botocore_s_model_and_grades_are_parsed() -> None:
    client = _client()
    items = [("2+2?", "4", "4"), ("Capital of France?", "Paris", "Lyon"), ("x", "y", "z")]
    shape = client.meta.service_model.operation_model("Converse").input_shape
    with Stubber(client) as stubber:  # the stubber checks every request's types
        for (prompt, reference, answer), reply in zip(
            items, ("1", "Grade: 0.25", "no idea"), strict=True
        ):
            request = converse_request(MODEL, "Correct?", prompt, reference, answer)
            assert constraint_violations(shape, request, "") == []
            stubber.add_response("converse", _reply(reply), expected_params=request)
        grades = judge_answers(client, MODEL, "Correct?", items)
    assert grades == [1.0, 0.25, None]


def test_a_model_that_is_not_enabled_is_named_with_what_to_do() -> None:
    client = _client()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "converse",
            service_error_code="AccessDeniedException",
            service_message="You don't have access to the model with the specified model ID.",
            http_status_code=403,
        )
        with pytest.raises(JudgeError, match="enable it in the Bedrock console"):
            judge_answers(client, MODEL, "Correct?", [("q", "a", "a")])


def test_the_twin_authorizes_converse_as_invoke_model_on_the_foundation_model() -> None:
    class Env:
        account, region, partition = "123456789012", "us-east-1", "aws"

    (request,) = authorizations(Env(), "bedrock-runtime", "Converse", {"modelId": MODEL})  # type: ignore[arg-type]
    assert request.action == "bedrock:InvokeModel"
    assert request.resource == f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"


@pytest.mark.parametrize(("reply", "grade"), [("0.8", 0.8), ("1.0", 1.0), ("7", None), ("", None)])
def test_grades_are_numbers_between_0_and_1(reply: str, grade: float | None) -> None:
    assert parse_grade(reply) == grade
