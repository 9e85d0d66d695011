"""Pieces both backends share: following an execution, promoting a run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from finetune.backends.base import ExecutionOutcome, Reporter
from finetune.errors import EXIT_USAGE, CliError
from finetune.local.executions import execution_events
from finetune.progress import RunProgress
from launch_run.logic import start_run
from runspec.request import RunRequestError
from runspec.settings import PlatformSettings

__all__ = ["check_run_id", "follow_execution", "model_package_of", "progress_for", "start"]

#: What a run id can be (the run request's run_name rule, and derived ids).
_RUN_ID = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_RUN_ID_MAX = 64


def check_run_id(run_id: str) -> str:
    """A run id as given on the command line, or a usage error: ids are compared exactly, so
    anything that is not a run id (a pattern such as ``demo-*``) is refused, never matched."""
    if len(run_id) > _RUN_ID_MAX or not _RUN_ID.match(run_id):
        raise CliError(
            f"{elide(repr(run_id))} is not a run id: letters, digits and single hyphens, at most "
            f"{_RUN_ID_MAX} characters (ids are matched exactly, never as patterns)",
            hint="finetune runs lists the run ids",
            exit_code=EXIT_USAGE,
        )
    return run_id


def elide(text: str, limit: int = 240) -> str:
    """``text`` shortened in the middle when longer than ``limit`` (a 10 MB value in an error
    message says what it is, not all of it)."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}…[{len(text) - 2 * keep:,} characters elided]…{text[-keep:]}"


def start(
    document: dict[str, Any], settings: PlatformSettings, client: Callable[[str], Any]
) -> dict[str, Any]:
    """Start a run (or a deploy request) exactly as the launch function does; requests the
    platform refuses are usage errors (exit code 2), nothing started."""
    try:
        return start_run(
            document,
            settings,
            sfn=client("stepfunctions"),
            s3=client("s3"),
            ecr=client("ecr"),
            sagemaker=client("sagemaker"),
        )
    except RunRequestError as error:
        raise CliError(
            "; ".join(error.problems),
            hint="the request is valid but does not fit this platform",
            exit_code=EXIT_USAGE,
        ) from None


def progress_for(record_or_request: dict[str, Any]) -> RunProgress:
    """A progress tracker that knows how long training should take (steps or epochs)."""
    hyperparameters = record_or_request.get("hyperparameters") or {}
    steps = hyperparameters.get("max_steps")
    return RunProgress(
        total_steps=int(steps) if steps and int(steps) > 0 else None,
        epochs=float(hyperparameters.get("epochs") or 1.0),
    )


def follow_execution(
    sfn: Any,
    execution_arn: str,
    *,
    progress: RunProgress,
    reporter: Reporter,
    poll_seconds: float,
    on_poll: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Report the execution's current state until it ends; return its description."""
    while True:
        description = dict(sfn.describe_execution(executionArn=execution_arn))
        entered = [
            e["stateEnteredEventDetails"]["name"]
            for e in execution_events(sfn, execution_arn)
            if "stateEnteredEventDetails" in e
        ]
        for state in entered[len(progress.states_seen) :]:
            if progress.enter(state):
                reporter.progress(progress)
        if on_poll is not None:
            on_poll(progress.state)
        reporter.progress(progress)
        if description["status"] != "RUNNING":
            return description
        time.sleep(poll_seconds)


def outcome_of(
    description: dict[str, Any], progress: RunProgress, run_id: str, summary: dict[str, Any] | None
) -> ExecutionOutcome:
    return ExecutionOutcome(
        run_id=run_id,
        execution_name=description["name"],
        status=description["status"],
        states=list(progress.states_seen),
        error=description.get("error"),
        cause=description.get("cause"),
        summary=summary,
    )


def model_package_of(record: dict[str, Any]) -> str:
    for milestone in record.get("milestones", []):
        if milestone.get("model_package_arn"):
            return str(milestone["model_package_arn"])
    raise CliError(
        f"run {record['run_id']} registered no model (status {record.get('status')})",
        hint="only runs that passed their evaluation gate can be promoted",
        exit_code=EXIT_USAGE,
    )


def deploy_document(run_id: str, deployment: dict[str, Any] | None) -> dict[str, Any]:
    """The deploy request for ``run_id``: the run's own deployment settings, or ``deployment``
    (enabled) when given."""
    if deployment is None:
        return {"deploy_run": run_id}
    return {"deploy_run": run_id, "deployment": {**deployment, "enabled": True}}


def summary_of(output: str | None) -> dict[str, Any] | None:
    if not output:
        return None
    document = json.loads(output)
    summary = document.get("summary")
    return summary if isinstance(summary, dict) else None
