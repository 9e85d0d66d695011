"""The CLI's AWS backend against the emulated platform: discovery by stack outputs, launch with
the launch function's own settings, following the execution, listing and promoting runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from finetune.backends.aws import AwsBackend
from finetune.errors import CliError
from finetune.progress import RunProgress
from stacks.config import load_config
from tests.workflow.conftest import Workflow


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.states: list[str] = []

    def progress(self, progress: RunProgress) -> None:
        self.states = list(progress.states_seen)

    def message(self, text: str) -> None:
        self.messages.append(text)


def deploy_outputs(flow: Workflow) -> None:
    """The two stacks the CLI reads, with the outputs `cdk deploy` would have created."""
    platform = flow.platform
    launch = next(name for name in platform.functions if name.startswith("LaunchRun"))
    outputs = {
        "llmft-local-data": {"ArtifactsBucketName": platform.artifacts_bucket},
        "llmft-local-workflow": {
            "StateMachineArn": platform.state_machine_arn,
            "LaunchFunctionName": platform.functions[launch],
        },
    }
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    for stack, values in outputs.items():
        template = {
            "Resources": {
                "Marker": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {"Name": f"/{stack}/marker", "Type": "String", "Value": "x"},
                }
            },
            "Outputs": {key: {"Value": value} for key, value in values.items()},
        }
        cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))


def studio_role(flow: Workflow) -> str:
    intrinsics = flow.platform.intrinsics
    roles = intrinsics.logical_ids("Studio", "AWS::IAM::Role")
    (role,) = [r for r in roles if r.startswith("ExecutionRole")]
    return str(intrinsics.attribute[("Studio", role, "Arn")])


@pytest.fixture
def backend(pending_workflow: Workflow) -> Iterator[AwsBackend]:
    """The CLI as a data scientist runs it in Studio: every call it makes is evaluated against
    the Studio execution role's synthesized policies."""
    deploy_outputs(pending_workflow)
    with pending_workflow.iam.acting_as(studio_role(pending_workflow)):
        yield AwsBackend(
            load_config("local"), boto3.Session(region_name="us-east-1"), poll_seconds=0.2
        )


def test_launch_follows_the_run_and_lists_it(
    backend: AwsBackend, pending_workflow: Workflow
) -> None:
    reporter = Recorder()
    request: dict[str, Any] = pending_workflow.base_request(
        run_name="cli-run", deployment={"enabled": True, "endpoint_name": "cli"}
    )

    outcome = backend.launch(request, reporter=reporter, wait=True, serve=False)

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.run_id == "cli-run"
    assert reporter.states[-1] == "Run succeeded"
    assert "Create model" not in reporter.states  # pending approval: registered only
    assert reporter.messages[0].startswith("run cli-run: started")
    again = backend.launch(request, reporter=reporter, wait=False, serve=False)
    assert again.started is False
    assert [r["run_id"] for r in backend.records()] == ["cli-run"]


def test_promote_approves_then_deploys(backend: AwsBackend, pending_workflow: Workflow) -> None:
    request = pending_workflow.base_request(
        run_name="to-promote", deployment={"enabled": True, "endpoint_name": "promoted"}
    )
    backend.launch(request, reporter=Recorder(), wait=True, serve=False)

    outcome = backend.promote("to-promote", reporter=Recorder(), serve=False)

    assert outcome.status == "SUCCEEDED", outcome.cause
    (config,) = pending_workflow.endpoints.serving.values()
    # The deployment's own model and config: SageMaker refuses a second model of one name.
    assert config.startswith("llmft-local-to-promote-")
    assert list(pending_workflow.endpoints.serving) == ["llmft-local-promoted"]


def test_requests_the_platform_refuses_are_usage_errors(backend: AwsBackend) -> None:
    with pytest.raises(CliError) as raised:
        backend.launch(
            {"training": {"instance_type": "ml.t3.medium"}},
            reporter=Recorder(),
            wait=False,
            serve=False,
        )
    assert raised.value.exit_code == 2
    assert "training.instance_type" in raised.value.message


def test_missing_stacks_say_how_to_deploy(pending_workflow: Workflow) -> None:
    backend = AwsBackend(load_config("dev"), boto3.Session(region_name="us-east-1"))
    with pytest.raises(CliError, match="stack llmft-dev-data is not deployed"):
        backend.records()
