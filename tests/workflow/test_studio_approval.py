"""Approve in Studio, deployed by the platform: the approval rule synthesized in the Studio stack,
executed in the emulator.

The Studio user approves the package with the Studio role (as the Model Registry UI does); the
event SageMaker would send (the documented fields, without CustomerMetadataProperties) is put on
moto's default bus, where the synthesized rule matches it and (finetune.local.event_patches: moto
does not deliver to Step Functions) starts the state machine with its input transformer's JSON,
as the rule's role, which the IAM twin evaluates.
"""

from __future__ import annotations

import json
import time
from typing import Any

from finetune.local.event_patches import package_state_change
from finetune.local.executions import ExecutionResult, wait_for_execution
from tests.workflow.conftest import Workflow
from tests.workflow.test_execution import packages, run_record
from tests.workflow.test_iam_twin import role_arn


def approve_in_studio(flow: Workflow, package_arn: str, status: str = "Approved") -> None:
    with flow.iam.acting_as(role_arn(flow, "Studio", "ExecutionRole")):
        flow.client("sagemaker").update_model_package(
            ModelPackageArn=package_arn, ModelApprovalStatus=status
        )


def sagemaker_sends_state_change(flow: Workflow, package_arn: str) -> ExecutionResult | None:
    """Put the package's state-change event on the default bus; the execution the approval rule
    started, if any."""
    sfn = flow.client("stepfunctions")
    before = {
        e["executionArn"]
        for e in sfn.list_executions(stateMachineArn=flow.platform.state_machine_arn)["executions"]
    }
    package = flow.client("sagemaker").describe_model_package(ModelPackageName=package_arn)
    event = package_state_change(package)
    assert "CustomerMetadataProperties" not in json.loads(event["Detail"])
    answer = flow.client("events").put_events(Entries=[event])
    assert answer["FailedEntryCount"] == 0
    started = [
        e["executionArn"]
        for e in sfn.list_executions(stateMachineArn=flow.platform.state_machine_arn)["executions"]
        if e["executionArn"] not in before
    ]
    if not started:
        return None
    (arn,) = started
    return wait_for_execution(sfn, arn, timeout_seconds=120)


def deploy_execution(flow: Workflow, approval: ExecutionResult) -> ExecutionResult:
    outcome: dict[str, Any] = approval.output["run"]["approval"]  # type: ignore[index]
    sfn = flow.client("stepfunctions")
    return wait_for_execution(sfn, outcome["deploy_execution_arn"], timeout_seconds=120)


def test_approving_in_studio_deploys_a_run_that_asked_once(pending_workflow: Workflow) -> None:
    flow = pending_workflow
    deployment = {"enabled": True, "endpoint_name": "studio-approved"}
    trained = flow.run(flow.base_request(run_name="approve-me", deployment=deployment))
    assert trained.status == "SUCCEEDED", trained.cause
    (package,) = packages(flow)
    arn = package["ModelPackageArn"]

    # Registered PendingManualApproval: the creation event is no approval, the rule ignores it.
    assert sagemaker_sends_state_change(flow, arn) is None
    assert flow.endpoints.deployed == []

    approve_in_studio(flow, arn)
    approval = sagemaker_sends_state_change(flow, arn)

    assert approval is not None
    assert approval.status == "SUCCEEDED", approval.cause
    assert approval.states == [
        "Receive run request",
        "Validate and resolve run",
        "Train or deploy?",
        "Approval handled",
    ]
    outcome = approval.output["run"]["approval"]  # type: ignore[index]
    assert outcome["decision"] == "deploying"
    assert outcome["model_package_arn"] == arn
    deployed = deploy_execution(flow, approval)
    assert deployed.status == "SUCCEEDED", deployed.cause
    assert "Create model" in deployed.states
    assert list(flow.endpoints.serving) == ["llmft-local-studio-approved"]
    milestones = [m["milestone"] for m in run_record(flow, "approve-me")["milestones"]]
    assert milestones[-2:] == ["deployed", "completed"]

    # SageMaker may send an event more than once: the same deploy execution, nothing redeployed.
    deployments = len(flow.endpoints.deployed)
    again = sagemaker_sends_state_change(flow, arn)
    assert again is not None
    assert again.status == "SUCCEEDED"
    repeated = again.output["run"]["approval"]  # type: ignore[index]
    assert repeated["deploy_execution_arn"] == outcome["deploy_execution_arn"]
    time.sleep(0.2)
    assert len(flow.endpoints.deployed) == deployments


def test_approval_deploys_nothing_when_the_run_did_not_ask(pending_workflow: Workflow) -> None:
    flow = pending_workflow
    trained = flow.run(flow.base_request(run_name="no-deploy-asked"))
    assert trained.status == "SUCCEEDED", trained.cause
    ((package),) = packages(flow)

    approve_in_studio(flow, package["ModelPackageArn"])
    approval = sagemaker_sends_state_change(flow, package["ModelPackageArn"])

    assert approval is not None
    assert approval.status == "SUCCEEDED", approval.cause
    outcome = approval.output["run"]["approval"]  # type: ignore[index]
    assert outcome["decision"] == "not-requested"
    assert "did not ask for deployment" in outcome["reason"]
    assert outcome["deploy_execution_arn"] is None
    assert flow.endpoints.deployed == []
    # The run's record is the training run's, untouched by the approval.
    record = run_record(flow, "no-deploy-asked")
    assert record["status"] == "completed"


def test_approval_of_a_package_the_run_did_not_register_is_refused(
    pending_workflow: Workflow,
) -> None:
    """Whoever may approve may not name the run: the package's run_id must be one the platform
    wrote, and that run's record must name the package."""
    flow = pending_workflow
    result = flow.run(
        {
            "approved_package": (
                f"arn:aws:sagemaker:us-east-1:123456789012:model-package/"
                f"{flow.platform.model_package_group}/99"
            )
        }
    )
    assert result.error == "RunRequestInvalid"
    refused = flow.run({"approved_package": "arn:aws:sagemaker:us-east-1:1:model-package/x/1"})
    assert refused.error == "RunRequestInvalid"
    assert "is not a versioned model package ARN" in refused.cause_json()["errorMessage"]
