"""Undeploy (``mode: undeploy``): delete the endpoint that serves a run, keep its model, endpoint
config and model package, record the change on the run and announce it.

The launch function resolved which endpoint, which run it serves, what it cost per hour and who
asked (``$.run.undeploy``, runspec.run.UndeployPlan). SageMaker refuses DeleteEndpoint while the
endpoint is Creating/Updating: the workflow first waits (bounded) until it has settled. Any
failure takes the failure path; the record function then records a failed endpoint change, not a
failed run (record_run.endpoint_changes).
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.endpoint_watch import Settle, settle
from stacks.components.workflow.steps import (
    WorkflowResources,
    catch,
    lambda_step,
    notify_step,
    sagemaker_sdk_step,
)

JsonPath = sfn.JsonPath

__all__ = ["UNDEPLOY", "undeploy"]

#: The undeploy plan in the run document.
UNDEPLOY = "$.run.undeploy"


def undeploy(
    scope: Construct, r: WorkflowResources, *, on_failure: sfn.IChainable
) -> sfn.IChainable:
    delete = sagemaker_sdk_step(
        scope,
        "Delete endpoint",
        "deleteEndpoint",
        {"EndpointName.$": f"{UNDEPLOY}.endpoint_name"},
        comment="Stop the endpoint's instances (and their bill); its model, endpoint config and "
        "model package stay, so the run can be deployed again.",
    )
    record = lambda_step(
        scope,
        "Record undeploy",
        r.record_function,
        {"milestone": "undeployed", "run.$": "$.run"},
        result_path="$.summary",
        comment="Add the endpoint change (who, when, what, cost per hour) to the run's record.",
    )
    notify = notify_step(
        scope,
        "Notify endpoint undeployed",
        r.topic,
        JsonPath.json_to_string(JsonPath.object_at("$.summary")),
        "Endpoint undeployed",
    )
    for state in (delete, record, notify):
        catch(state, on_failure)
    delete.next(record).next(notify).next(sfn.Succeed(scope, "Endpoint undeployed"))
    blocked = sfn.Pass(
        scope,
        "Undeploy blocked",
        parameters={
            "Error": "EndpointInTransition",
            "Cause.$": "States.Format('endpoint {} stayed {} for {} checks; SageMaker refuses "
            f"to delete it meanwhile: undeploy it again later', {UNDEPLOY}.endpoint_name, "
            "$.endpoint.settling.EndpointStatus, $.endpoint.settle_polls)",
        },
        result_path="$.error",
    )
    blocked.next(on_failure)
    return settle(
        scope,
        Settle(
            start="Start undeploy wait counter",
            check="Check endpoint before undeploy",
            settled="Endpoint settled for undeploy?",
            wait="Wait before undeploy",
            count="Count undeploy wait",
            store="Store undeploy wait count",
            too_long="Waited too long to undeploy?",
            endpoint_name=f"{UNDEPLOY}.endpoint_name",
            plan=UNDEPLOY,
            polls="$.endpoint.settle_polls",
            status="$.endpoint.settling",
            error_path="$.error",
            comment="SageMaker refuses DeleteEndpoint while the endpoint is in transition.",
        ),
        then=delete,
        blocked=blocked,
        on_failure=on_failure,
    )
