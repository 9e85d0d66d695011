"""Follow a Step Functions execution: wait for it and read its history as people would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExecutionResult", "wait_for_execution"]


@dataclass(frozen=True)
class ExecutionResult:
    status: str
    states: list[str]  # entered states, in order
    transitions: int
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    task_failures: list[dict[str, str]] = field(default_factory=list)

    def cause_json(self) -> Any:
        return json.loads(self.cause) if self.cause else None


def wait_for_execution(
    sfn: Any, execution_arn: str, *, timeout_seconds: float = 600, poll_seconds: float = 0.2
) -> ExecutionResult:
    """Block until the execution ends (or raise TimeoutError) and summarise it."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        description = sfn.describe_execution(executionArn=execution_arn)
        if description["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still running after {timeout_seconds:g} s")
        time.sleep(poll_seconds)
    events = execution_events(sfn, execution_arn)
    states = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    failures = [
        {"error": details.get("error", ""), "cause": details.get("cause", "")}
        for e in events
        for key in ("taskFailedEventDetails", "lambdaFunctionFailedEventDetails")
        if (details := e.get(key)) is not None
    ]
    output = description.get("output")
    return ExecutionResult(
        status=description["status"],
        states=states,
        transitions=max(len(states) - 1, 0),
        output=json.loads(output) if output else None,
        error=description.get("error"),
        cause=description.get("cause"),
        task_failures=failures,
    )


def execution_events(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {})
        )
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events
