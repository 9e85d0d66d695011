"""Start an execution the way the CLI and the launch function do: ``start_run`` resolves the
request (retry, undeploy, deploy or a new run) and names the execution; then wait for it."""

from __future__ import annotations

from typing import Any

from finetune.local.executions import ExecutionResult, wait_for_execution
from launch_run.logic import start_run
from runspec.settings import PlatformSettings
from tests.workflow.conftest import Workflow


def start(flow: Workflow, payload: dict[str, Any]) -> tuple[dict[str, Any], ExecutionResult]:
    """``payload`` started through the launch logic; what it returned and how the run ended."""
    settings = PlatformSettings.from_env(flow.platform.launch_environment)
    started = start_run(
        payload,
        settings,
        sfn=flow.client("stepfunctions"),
        s3=flow.client("s3"),
        ecr=flow.client("ecr"),
        sagemaker=flow.client("sagemaker"),
    )
    result = wait_for_execution(
        flow.client("stepfunctions"), started["execution_arn"], timeout_seconds=120
    )
    return started, result
