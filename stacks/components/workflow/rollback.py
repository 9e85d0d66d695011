"""Rollback of a deployment that failed after its endpoint changed: wait until the endpoint has
settled, then delete a new endpoint or put an updated one back on its previous config (and watch
it serve that again); the run then fails with the original error and ``$.error.rollback``."""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.endpoint_watch import (
    DEPLOYMENT,
    Settle,
    Watch,
    endpoint_watch,
    settle,
)
from stacks.components.workflow.steps import catch, sagemaker_sdk_step

Condition = sfn.Condition

__all__ = ["rollback"]


def rollback(scope: Construct, on_failure: sfn.IChainable) -> sfn.IChainable:
    """Undo this run's endpoint change, then fail with the original error."""
    restore = sagemaker_sdk_step(
        scope,
        "Restore previous endpoint config",
        "updateEndpoint",
        {
            "EndpointName.$": f"{DEPLOYMENT}.endpoint_name",
            "EndpointConfigName.$": "$.endpoint.rollback.previous_config",
        },
        comment="Put the endpoint back on the config that served before this run.",
    )
    delete = sagemaker_sdk_step(
        scope,
        "Delete failed endpoint",
        "deleteEndpoint",
        {"EndpointName.$": f"{DEPLOYMENT}.endpoint_name"},
        comment="A new endpoint that never served: remove it so it costs nothing.",
    )
    for state in (restore, delete):
        catch(state, on_failure, result_path="$.error.rollback")

    def outcome(name: str, result: dict[str, str]) -> sfn.Pass:
        step = sfn.Pass(scope, name, parameters=result, result_path="$.error.rollback")
        step.next(on_failure)
        return step

    restored = outcome(
        "Previous config serves again",
        {"outcome": "restored", "endpoint_config.$": "$.endpoint.rollback.previous_config"},
    )
    not_restored = outcome(
        "Restore did not complete",
        {"outcome": "restore incomplete", "status.$": "$.endpoint.restore.EndpointStatus"},
    )
    restore_timed_out = outcome(
        "Restore wait timed out",
        {"outcome": "restore still in progress", "checks.$": "$.endpoint.restore_polls"},
    )
    deleted = outcome("Failed endpoint deleted", {"outcome": "deleted"})
    delete.next(deleted)
    restore.next(
        endpoint_watch(
            scope,
            Watch(
                start="Start restore wait counter",
                wait="Wait for restored endpoint",
                check="Check restored endpoint",
                verdict="Restored endpoint in service?",
                count="Count restore wait",
                store="Store restore wait count",
                too_long="Waited too long for restore?",
                polls="$.endpoint.restore_polls",
                status="$.endpoint.restore",
                expected_config="$.endpoint.rollback.previous_config",
                error_path="$.error.rollback",
                on_error=on_failure,
            ),
            serving=restored,
            serving_other_config=not_restored,
            failed=not_restored,
            unusable=not_restored,
            timed_out=restore_timed_out,
        )
    )
    act = (
        sfn.Choice(scope, "Previous config to restore?")
        .when(Condition.string_equals("$.endpoint.rollback.action", "restore"), restore)
        .otherwise(delete)
    )
    blocked = outcome(
        "Rollback blocked",
        {
            "outcome": "endpoint still in transition: roll it back by hand",
            "status.$": "$.endpoint.settling.EndpointStatus",
            "checks.$": "$.endpoint.settle_polls",
        },
    )
    return _settle(scope, then=act, blocked=blocked, on_failure=on_failure)


def _settle(
    scope: Construct, *, then: sfn.IChainable, blocked: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    """Wait (at most ``max_polls`` checks) until the endpoint is no longer in transition."""
    return settle(
        scope,
        Settle(
            start="Start rollback wait counter",
            check="Check endpoint before rollback",
            settled="Endpoint settled?",
            wait="Wait before rollback",
            count="Count rollback wait",
            store="Store rollback wait count",
            too_long="Waited too long to roll back?",
            endpoint_name=f"{DEPLOYMENT}.endpoint_name",
            plan=DEPLOYMENT,
            polls="$.endpoint.settle_polls",
            status="$.endpoint.settling",
            error_path="$.error.rollback",
            comment="Delete and update are refused while the endpoint is in transition.",
        ),
        then=then,
        blocked=blocked,
        on_failure=on_failure,
    )
