"""Undeploy, executed: the endpoint that serves a run is deleted (model, config and package stay),
the change is recorded on the run with who, when and what it cost, and the run deploys again."""

from __future__ import annotations

import json

from tests.workflow.conftest import Workflow
from tests.workflow.launching import start
from tests.workflow.test_execution import notifications, run_record

ALICE = "arn:aws:iam::123456789012:user/alice"
UNDEPLOY_PATH = [
    "Receive run request",
    "Validate and resolve run",
    "Train or deploy?",
    "Start undeploy wait counter",
    "Check endpoint before undeploy",
    "Endpoint settled for undeploy?",
    "Delete endpoint",
    "Record undeploy",
    "Notify endpoint undeployed",
    "Endpoint undeployed",
]


def endpoint_names(flow: Workflow) -> list[str]:
    return [e["EndpointName"] for e in flow.client("sagemaker").list_endpoints()["Endpoints"]]


def test_undeploy_deletes_the_endpoint_records_it_and_the_run_deploys_again(
    workflow: Workflow,
) -> None:
    deployment = {"enabled": True, "endpoint_name": "chat", "instance_type": "ml.g5.xlarge"}
    trained = workflow.run(workflow.base_request(run_name="served", deployment=deployment))
    assert trained.status == "SUCCEEDED", trained.cause
    config = trained.output["run"]["deployment"]["endpoint_config_name"]  # type: ignore[index]
    model = trained.output["run"]["deployment"]["model_name"]  # type: ignore[index]

    started, undeployed = start(
        workflow, {"undeploy": "chat", "requested_by": ALICE, "reason": "done testing"}
    )

    assert undeployed.status == "SUCCEEDED", undeployed.cause
    assert undeployed.states == UNDEPLOY_PATH
    assert started["execution_arn"].endswith(":served-undeploy-" + started["execution_arn"][-6:])
    assert "llmft-local-chat" not in endpoint_names(workflow)
    assert workflow.endpoints.deleted == ["llmft-local-chat"]
    # Model, config and package stay: the run can be served again.
    sagemaker = workflow.client("sagemaker")
    sagemaker.describe_model(ModelName=model)
    sagemaker.describe_endpoint_config(EndpointConfigName=config)
    record = run_record(workflow, "served")
    assert record["status"] == "completed"  # the run itself did not change
    deployed, change = record["endpoint_changes"]
    assert deployed["change"] == "deployed"
    assert deployed["usd_per_hour"] > 0
    assert change["change"] == "undeployed"
    assert change["endpoint_name"] == "llmft-local-chat"
    assert change["endpoint_config_name"] == config
    assert change["requested_by"] == ALICE
    assert change["reason"] == "done testing"
    assert change["trigger"] == "request"
    assert change["instance_type"] == "ml.g5.xlarge"
    assert change["usd_per_hour"] == deployed["usd_per_hour"]
    assert change["execution"] == started["execution_arn"].rsplit(":", 1)[1]
    notice = json.loads(notifications(workflow)[-1])
    assert notice["endpoint_change"]["change"] == "undeployed"

    # Undeploying again: there is nothing to undeploy, and nothing starts.
    again = workflow.run({"undeploy": "llmft-local-chat"})
    assert again.error == "RunRequestInvalid"
    assert "neither an endpoint of the platform" in again.cause_json()["errorMessage"]

    # Deploy the same run again, twice over: each undeploy lets the same request deploy anew.
    for cycle in (1, 2):
        _, redeployed = start(workflow, {"deploy_run": "served"})
        assert redeployed.status == "SUCCEEDED", redeployed.cause
        assert "llmft-local-chat" in endpoint_names(workflow), cycle
        _, by_run = start(workflow, {"undeploy": "served"})  # the run id finds its endpoint
        assert by_run.status == "SUCCEEDED", by_run.cause
        assert "llmft-local-chat" not in endpoint_names(workflow), cycle
    changes = [c["change"] for c in run_record(workflow, "served")["endpoint_changes"]]
    assert changes == ["deployed", "undeployed"] * 3


def test_only_endpoints_that_serve_a_platform_run_are_undeployed(workflow: Workflow) -> None:
    # Someone's own endpoint under the platform's prefix, from the platform's serving image and
    # model role, but not created by a run (no run tag).
    sagemaker = workflow.client("sagemaker")
    machine = workflow.client("stepfunctions").describe_state_machine(
        stateMachineArn=workflow.platform.state_machine_arn
    )
    create_model = json.loads(machine["definition"])["States"]["Create model"]["Parameters"]
    sagemaker.create_model(
        ModelName="llmft-local-hand-made",
        ExecutionRoleArn=create_model["ExecutionRoleArn"],
        PrimaryContainer={"Image": create_model["PrimaryContainer"]["Image"]},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="llmft-local-hand-made",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "llmft-local-hand-made",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(
        EndpointName="llmft-local-hand-made", EndpointConfigName="llmft-local-hand-made"
    )

    refused = workflow.run({"undeploy": "hand-made"})

    assert refused.error == "RunRequestInvalid"
    assert "which no platform run created" in refused.cause_json()["errorMessage"]
    assert "llmft-local-hand-made" in endpoint_names(workflow)
    both = workflow.run({"undeploy": "chat", "idle_alarm": "llmft-local-chat-idle"})
    assert "exactly one of undeploy" in both.cause_json()["errorMessage"]
