"""Smoke-test a freshly deployed endpoint with one real generation request."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SMOKE_PROMPT", "SmokeTestFailed", "smoke_test"]

SMOKE_PROMPT = "Say hello in one short sentence."


class SmokeTestFailed(Exception):  # noqa: N818 - the error name Step Functions catches
    """The endpoint did not answer a generation request correctly."""


def smoke_test(runtime: Any, endpoint_name: str, *, max_new_tokens: int = 16) -> dict[str, Any]:
    """Send one TGI-style generation request; the endpoint passes when it answers with text."""
    body = {"inputs": SMOKE_PROMPT, "parameters": {"max_new_tokens": max_new_tokens}}
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(body).encode(),
        )
    except Exception as error:  # botocore ModelError / ClientError / connection errors
        raise SmokeTestFailed(f"endpoint {endpoint_name} did not answer: {error}") from None
    raw = response["Body"].read()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise SmokeTestFailed(
            f"endpoint {endpoint_name} answered with non-JSON: {raw[:200]!r}"
        ) from None
    text = _generated_text(answer)
    if not text:
        raise SmokeTestFailed(
            f"endpoint {endpoint_name} answered without generated text: {str(answer)[:200]}"
        )
    return {"endpoint_name": endpoint_name, "prompt": SMOKE_PROMPT, "generated_text": text[:500]}


def _generated_text(answer: Any) -> str:
    """TGI answers ``[{"generated_text": ...}]`` (or a bare object)."""
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if isinstance(answer, dict):
        text = answer.get("generated_text")
        return text if isinstance(text, str) else ""
    return ""
