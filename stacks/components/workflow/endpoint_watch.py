"""One endpoint wait loop: poll DescribeEndpoint every ``poll_seconds``, at most ``max_polls``
times, until the endpoint serves the expected config; each other outcome has its own next state.

Used for the deployment and for the restore of the previous config during a rollback."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.steps import catch, sagemaker_sdk_step

Condition = sfn.Condition

__all__ = ["DEPLOYMENT", "IN_TRANSITION", "Watch", "endpoint_watch"]

DEPLOYMENT = "$.run.deployment"
#: DescribeEndpoint statuses after which waiting longer cannot help.
_UNUSABLE = ("UpdateRollbackFailed", "Deleting")
#: DescribeEndpoint statuses in which SageMaker refuses DeleteEndpoint and UpdateEndpoint.
IN_TRANSITION = ("Creating", "Updating", "SystemUpdating", "RollingBack")


@dataclass(frozen=True)
class Watch:
    """State names and paths of one endpoint wait loop."""

    start: str
    wait: str
    check: str
    verdict: str
    count: str
    store: str
    too_long: str
    polls: str
    status: str
    expected_config: str
    #: Where an error of the status check goes, and where the run goes next.
    error_path: str
    on_error: sfn.IChainable


def endpoint_watch(
    scope: Construct,
    watch: Watch,
    *,
    serving: sfn.IChainable,
    serving_other_config: sfn.IChainable,
    failed: sfn.IChainable,
    unusable: sfn.IChainable,
    timed_out: sfn.IChainable,
) -> sfn.IChainable:
    """Poll DescribeEndpoint every ``poll_seconds``, at most ``max_polls`` times, until the
    endpoint serves ``expected_config``; every other outcome has its own next state."""
    start = sfn.Pass(scope, watch.start, result=sfn.Result.from_number(0), result_path=watch.polls)
    wait = sfn.Wait(scope, watch.wait, time=sfn.WaitTime.seconds_path(f"{DEPLOYMENT}.poll_seconds"))
    check = sagemaker_sdk_step(
        scope,
        watch.check,
        "describeEndpoint",
        {"EndpointName.$": f"{DEPLOYMENT}.endpoint_name"},
        comment="Poll the endpoint (bounded by the wait counter).",
        result_path=watch.status,
    )
    catch(check, watch.on_error, result_path=watch.error_path)
    count = sfn.Pass(
        scope,
        watch.count,
        parameters={"value.$": f"States.MathAdd({watch.polls}, 1)"},
        result_path=f"{watch.polls}_next",
    )
    store = sfn.Pass(
        scope, watch.store, input_path=f"{watch.polls}_next.value", result_path=watch.polls
    )
    status = f"{watch.status}.EndpointStatus"
    config = f"{watch.status}.EndpointConfigName"
    in_service = Condition.string_equals(status, "InService")
    verdict = (
        sfn.Choice(scope, watch.verdict)
        .when(Condition.string_equals(status, "Failed"), failed)
        .when(
            Condition.or_(*(Condition.string_equals(status, s) for s in _UNUSABLE)),
            unusable,
        )
        # Rules are tried in order: past this one the config name is present.
        .when(Condition.not_(Condition.is_present(config)), count, comment="no config yet")
        .when(
            Condition.and_(
                in_service, Condition.string_equals_json_path(config, watch.expected_config)
            ),
            serving,
        )
        .when(in_service, serving_other_config, comment="in service on another config")
        .otherwise(count)
    )
    too_long = (
        sfn.Choice(scope, watch.too_long)
        .when(
            Condition.number_greater_than_equals_json_path(watch.polls, f"{DEPLOYMENT}.max_polls"),
            timed_out,
        )
        .otherwise(wait)
    )
    count.next(store).next(too_long)
    start.next(wait).next(check).next(verdict)
    return start
