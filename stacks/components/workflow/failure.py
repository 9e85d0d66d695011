"""Where every failure ends: recorded (as a run, or by execution name when the request never
became one), announced, and the execution failed with the original error."""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.steps import WorkflowResources, lambda_step, notify_step

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["failure_path"]


def failure_path(scope: Construct, r: WorkflowResources) -> sfn.IChainable:
    """Entered with the error at ``$.error`` (``Error``, ``Cause``, and ``rollback`` when an
    endpoint change was undone). Recording and notifying are each caught, so that a failure to
    record still notifies and a failure to notify still fails the execution with the original
    error."""
    # A Fail state may not raise the reserved "States.*" names (e.g. States.TaskFailed from a
    # failed training job); those end as RunFailed with the original name in the cause.
    failed = (
        sfn.Choice(scope, "Reserved error name?")
        .when(
            Condition.string_matches("$.error.Error", "States.*"),
            sfn.Fail(
                scope,
                "Run failed in a step",
                error="RunFailed",
                cause_path=JsonPath.format(
                    "{}: {}",
                    JsonPath.string_at("$.error.Error"),
                    JsonPath.string_at("$.error.Cause"),
                ),
            ),
        )
        .otherwise(
            sfn.Fail(scope, "Run failed", error_path="$.error.Error", cause_path="$.error.Cause")
        )
    )
    notify = notify_step(
        scope,
        "Notify run failed",
        r.topic,
        JsonPath.format(
            "Fine-tuning run {} failed. {}: {}",
            JsonPath.string_at("$$.Execution.Name"),
            JsonPath.string_at("$.error.Error"),
            JsonPath.string_at("$.error.Cause"),
        ),
        "Fine-tuning run failed",
    )
    notify.add_catch(failed, errors=["States.ALL"], result_path="$.notify_error")
    notify.next(failed)
    record_failure = lambda_step(
        scope,
        "Record failure",
        r.record_function,
        {"milestone": "failed", "run.$": "$.run", "error.$": "$.error", "training.$": "$.training"},
        result_path="$.summary",
        comment="Mark the run failed with its cause, and the training job that completed (if "
        "one did: a retry resumes after it).",
    )
    record_invalid = lambda_step(
        scope,
        "Record invalid request",
        r.record_function,
        {
            "milestone": "failed",
            "run": None,
            "execution_name.$": "$$.Execution.Name",
            "error.$": "$.error",
        },
        result_path="$.summary",
        comment="The request never became a run: keep the failure by execution name.",
    )
    for state in (record_failure, record_invalid):
        state.add_catch(notify, errors=["States.ALL"], result_path="$.record_error")
        state.next(notify)
    return (
        sfn.Choice(scope, "Run resolved?")
        .when(Condition.is_present("$.run"), record_failure)
        .otherwise(record_invalid)
    )
