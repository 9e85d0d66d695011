"""Endpoint wait loops: poll DescribeEndpoint every ``poll_seconds``, at most ``max_polls`` times.

``endpoint_watch`` waits until the endpoint serves the expected config (each other outcome has
its own next state): the deployment, and the restore of the previous config during a rollback.
``settle`` waits until the endpoint has left Creating/Updating (SageMaker refuses DeleteEndpoint
and UpdateEndpoint meanwhile): before a rollback, and before an undeploy."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.steps import catch, sagemaker_sdk_step

Condition = sfn.Condition

__all__ = ["DEPLOYMENT", "IN_TRANSITION", "Settle", "Watch", "endpoint_watch", "settle"]

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


@dataclass(frozen=True)
class Settle:
    """State names and paths of one wait for an endpoint to leave its transition."""

    start: str
    check: str
    settled: str
    wait: str
    count: str
    store: str
    too_long: str
    #: JSONPath of the endpoint's name, and of the object holding poll_seconds and max_polls.
    endpoint_name: str
    plan: str
    polls: str
    #: Where DescribeEndpoint's answer goes.
    status: str
    #: Where an error of the check goes.
    error_path: str
    comment: str


def settle(
    scope: Construct,
    names: Settle,
    *,
    then: sfn.IChainable,
    blocked: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    """Check the endpoint at once, then every ``poll_seconds`` (at most ``max_polls`` checks)
    until it is no longer in transition; then ``then``, or ``blocked`` when it never settles.

    A wait that timed out, or a failure during Creating/Updating, leaves the endpoint in
    transition, and SageMaker refuses DeleteEndpoint and UpdateEndpoint on it until it settles
    ("Cannot update in-progress endpoint"): acting at once would fail, and leave the endpoint to
    come up later, billing or serving."""
    polls = names.polls
    start = sfn.Pass(scope, names.start, result=sfn.Result.from_number(0), result_path=polls)
    check = sagemaker_sdk_step(
        scope,
        names.check,
        "describeEndpoint",
        {"EndpointName.$": names.endpoint_name},
        comment=names.comment,
        result_path=names.status,
    )
    catch(check, on_failure, result_path=names.error_path)
    wait = sfn.Wait(scope, names.wait, time=sfn.WaitTime.seconds_path(f"{names.plan}.poll_seconds"))
    count = sfn.Pass(
        scope,
        names.count,
        parameters={"value.$": f"States.MathAdd({polls}, 1)"},
        result_path=f"{polls}_next",
    )
    store = sfn.Pass(scope, names.store, input_path=f"{polls}_next.value", result_path=polls)
    too_long = (
        sfn.Choice(scope, names.too_long)
        .when(
            Condition.number_greater_than_equals_json_path(polls, f"{names.plan}.max_polls"),
            blocked,
        )
        .otherwise(wait)
    )
    status = f"{names.status}.EndpointStatus"
    settled = (
        sfn.Choice(scope, names.settled)
        .when(
            Condition.or_(*(Condition.string_equals(status, s) for s in IN_TRANSITION)),
            count,
        )
        .otherwise(then)
    )
    count.next(store).next(too_long)
    wait.next(check)
    start.next(check).next(settled)
    return start
