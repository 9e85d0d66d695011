"""``finetune deploy``, ``endpoints`` and ``undeploy`` on the AWS backend against the emulated
platform, as a data scientist runs them in Studio (every call evaluated against the Studio
execution role): deploy with an override, list what serves and costs, undeploy by name."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from typer.testing import CliRunner

from finetune.backends.aws import AwsBackend
from finetune.cli import app
from runspec.catalog import get_instance
from stacks.config import load_config
from tests.workflow.conftest import Workflow
from tests.workflow.test_aws_backend import Recorder, deploy_outputs, studio_role
from tests.workflow.test_execution import run_record
from tests.workflow.test_iam_twin import decide


@pytest.fixture
def studio(pending_workflow: Workflow) -> Iterator[AwsBackend]:
    deploy_outputs(pending_workflow)
    with pending_workflow.iam.acting_as(studio_role(pending_workflow)):
        yield AwsBackend(
            load_config("local"), boto3.Session(region_name="us-east-1"), poll_seconds=0.2
        )


def test_deploy_list_and_undeploy_from_the_cli(
    studio: AwsBackend, pending_workflow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, flow = studio, pending_workflow
    monkeypatch.setattr("finetune.cli._backend", lambda options: backend)
    request = flow.base_request(
        run_name="served", deployment={"enabled": True, "endpoint_name": "cli"}
    )
    backend.launch(request, reporter=Recorder(), wait=True, serve=False)

    # finetune deploy served --instance-count 2: the run's deployment, with the override.
    deployed = backend.promote(
        "served",
        reporter=Recorder(),
        serve=False,
        deployment={"endpoint_name": "cli", "initial_instance_count": 2},
    )
    assert deployed.status == "SUCCEEDED", deployed.cause

    (row,) = backend.endpoints()
    assert (row.name, row.status, row.run_id, row.instance_count) == (
        "llmft-local-cli",
        "InService",
        "served",
        2,
    )
    price = get_instance(str(row.instance_type)).price("us-east-1")
    assert price is not None
    assert row.usd_per_hour == round(2 * price[0], 4)
    listed = CliRunner().invoke(app, ["--env", "local", "endpoints", "--aws", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [e["name"] for e in json.loads(listed.stdout)] == ["llmft-local-cli"]

    undeployed = CliRunner().invoke(app, ["--env", "local", "undeploy", "cli", "--aws", "--json"])

    assert undeployed.exit_code == 0, undeployed.output
    assert json.loads(undeployed.stdout)["states"][-1] == "Endpoint undeployed"
    assert backend.endpoints() == []
    change = run_record(flow, "served")["endpoint_changes"][-1]
    caller = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Arn"]
    assert (change["change"], change["requested_by"], change["instance_count"]) == (
        "undeployed",
        caller,
        2,
    )


def test_studio_users_undeploy_only_through_the_recorded_workflow(
    pending_workflow: Workflow,
) -> None:
    role = studio_role(pending_workflow)
    endpoint = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/llmft-local-chat"
    assert decide(
        pending_workflow, role, "states:StartExecution", pending_workflow.platform.state_machine_arn
    )
    assert not decide(pending_workflow, role, "sagemaker:DeleteEndpoint", endpoint)
