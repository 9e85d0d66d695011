"""LLM-as-judge: an Amazon Bedrock model grades each generated answer against its reference.

Off unless the run asks for it (``evaluation.judge``). One Converse call per answer
(bedrock-runtime, through boto3, which the training image has with the SageMaker toolkit),
greedy (temperature 0) and short (the grade is one number), so grades are as reproducible as
the model allows. The training role may invoke only the models the platform allows; a model that
is not enabled in the account (Bedrock console, "Model access") is reported as such, once, and
the run goes on without judge_score (a gate on it then refuses the model).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["JudgeError", "converse_request", "judge_answers", "parse_grade"]

SYSTEM_PROMPT = (
    "You grade answers to a task against a reference answer. Reply with one number between 0 "
    "and 1 and nothing else."
)
_GRADE = re.compile(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?)(?![\d.])")
#: Bedrock's answers when the caller may not use the model (not enabled, or not granted).
_NOT_ENABLED = ("AccessDeniedException", "ResourceNotFoundException", "ValidationException")


class JudgeError(RuntimeError):
    """The judge cannot grade (model not enabled, not allowed, or not found)."""


def converse_request(
    model_id: str, rubric: str, prompt: str, reference: str, answer: str
) -> dict[str, Any]:
    """The bedrock-runtime Converse request for one answer."""
    text = (
        f"Rubric: {rubric}\n\nTask:\n{prompt}\n\nReference answer:\n{reference}\n\n"
        f"Answer to grade:\n{answer}\n\nGrade (0 to 1):"
    )
    return {
        "modelId": model_id,
        "system": [{"text": SYSTEM_PROMPT}],
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": 8, "temperature": 0.0},
    }


def parse_grade(reply: str) -> float | None:
    """The first number in [0, 1] of the judge's reply; None when it gave none."""
    match = _GRADE.search(reply)
    return float(match.group(1)) if match else None


def _client() -> Any:
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("bedrock-runtime", region_name=region)


def judge_answers(
    client: Any, model_id: str, rubric: str, items: Sequence[tuple[str, str, str]]
) -> list[float | None]:
    """A grade per (prompt, reference, answer); raises JudgeError when the model cannot be
    used at all."""
    client = client or _client()
    grades: list[float | None] = []
    for prompt, reference, answer in items:
        request = converse_request(model_id, rubric, prompt, reference, answer)
        try:
            response = client.converse(**request)
        except Exception as error:  # botocore ClientError; its class is per client
            code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
            if code in _NOT_ENABLED:
                raise JudgeError(
                    f"Bedrock model {model_id!r} cannot be used by this job ({code}: "
                    f"{getattr(error, 'response', {}).get('Error', {}).get('Message', error)}); "
                    "enable it in the Bedrock console (Model access) in this region, and make "
                    "sure the platform allows it as a judge"
                ) from None
            raise
        content = response["output"]["message"]["content"]
        reply = " ".join(part.get("text", "") for part in content)
        grade = parse_grade(reply)
        if grade is None:
            logger.warning("judge gave no grade for an answer: %r", reply[:80])
        grades.append(grade)
    return grades
