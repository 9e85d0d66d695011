"""The fine-tuning workflow as data: each part built by a small function that is given where to
go next and where failures go.

The state document as it grows (JSONPath), each part typed in ``runspec.run``:

- ``$.request`` / ``$.execution_name``: what was asked.
- ``$.run``: the run document (``RunDocument``) the launch function resolved.
- ``$.training``: the finished training job (name, ARN, status, model artifacts).
- ``$.recorded``: metrics and the gate's decision (``TrainedRecord``).
- ``$.registration``: the model package.
- ``$.endpoint``: deployment progress (current endpoint, rollback plan, status, wait counters).
- ``$.error``: the failure being handled; ``$.summary``: what the notification says.
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.deployment import deploy
from stacks.components.workflow.failure import failure_path
from stacks.components.workflow.registration import record_and_gate, register
from stacks.components.workflow.resume import resume_point
from stacks.components.workflow.steps import (
    WorkflowResources,
    catch,
    lambda_step,
    notify_step,
)
from stacks.components.workflow.training import train
from stacks.components.workflow.undeploy import undeploy

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["WorkflowResources", "build_definition"]


def build_definition(scope: Construct, r: WorkflowResources) -> sfn.IChainable:
    """The workflow's start state: launch, then train-record-gate-register(-deploy), or, for a
    ``deploy_run`` request, deploy an earlier run's approved model, or, for an ``undeploy``
    request, delete the endpoint that serves a run."""
    on_failure = failure_path(scope, r)
    finish = _finish(scope, r, on_failure=on_failure)
    deployment = deploy(scope, r, then=finish, on_failure=on_failure)
    deploy_requested = Condition.and_(
        Condition.boolean_equals("$.run.deployment.enabled", True),
        Condition.boolean_equals("$.run.deployment.approved", True),
    )
    should_deploy = (
        sfn.Choice(
            scope,
            "Deploy?",
            comment="Only when the request asks for it and the package is Approved.",
        )
        .when(deploy_requested, deployment)
        .otherwise(finish)
    )
    registered = register(scope, r, then=should_deploy, on_failure=on_failure)
    gated = record_and_gate(scope, r, passed=registered, on_failure=on_failure)
    trained = train(scope, r, then=gated, on_failure=on_failure)
    started = lambda_step(
        scope,
        "Record run started",
        r.record_function,
        {"milestone": "started", "run.$": "$.run"},
        result_path=None,
        comment="Create the experiment, the run's trial and its run component.",
    )
    catch(started, on_failure)
    started.next(
        resume_point(
            scope,
            train=trained,
            record=gated,
            register=registered,
            deploy=should_deploy,
            complete=finish,
        )
    )
    use_registered = sfn.Pass(
        scope,
        "Use the registered model",
        comment="Deploy an earlier run's Approved model package: no training.",
        parameters={"model_artifacts.$": "$.run.model_artifacts"},
        result_path="$.training",
    )
    use_registered.next(deployment)
    approval_handled = sfn.Succeed(
        scope,
        "Approval handled",
        comment="A package approval (Studio's approval rule): $.run.approval says what was "
        "done; a deployment runs as the run's own deploy execution.",
    )
    mode = (
        sfn.Choice(scope, "Train or deploy?")
        .when(Condition.string_equals("$.run.mode", "deploy"), use_registered)
        .when(Condition.string_equals("$.run.mode", "approval"), approval_handled)
        .when(
            Condition.string_equals("$.run.mode", "undeploy"),
            undeploy(scope, r, on_failure=on_failure),
        )
        .otherwise(started)
    )
    receive = sfn.Pass(
        scope,
        "Receive run request",
        comment="Keep the execution input as $.request; {} means all defaults. $.training is "
        "{} until a job completes (a failure is recorded with it: a retry does not train again).",
        parameters={"request.$": "$", "execution_name.$": "$$.Execution.Name", "training": {}},
    )
    launch = lambda_step(
        scope,
        "Validate and resolve run",
        r.launch_function,
        {"request.$": "$.request", "execution_name.$": "$.execution_name"},
        result_path="$.run",
        comment="Fill defaults, check the request against the platform, pin dataset "
        "versions and the image digest, derive the run id.",
    )
    catch(launch, on_failure)
    return receive.next(launch).next(mode)


def _finish(
    scope: Construct, r: WorkflowResources, *, on_failure: sfn.IChainable
) -> sfn.IChainable:
    completed = lambda_step(
        scope,
        "Record completion",
        r.record_function,
        {"milestone": "completed", "run.$": "$.run"},
        result_path="$.summary",
        comment="Close the run component; summarise the run.",
    )
    notify = notify_step(
        scope,
        "Notify run succeeded",
        r.topic,
        JsonPath.json_to_string(JsonPath.object_at("$.summary")),
        "Fine-tuning run succeeded",
    )
    for state in (completed, notify):
        catch(state, on_failure)
    return completed.next(notify).next(sfn.Succeed(scope, "Run succeeded"))
