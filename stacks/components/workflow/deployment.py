"""Deploy: model, endpoint config, create or update the endpoint, wait until it serves the new
config, smoke-test it, record it; roll back on any failure so that nothing is left broken.

Rollback: a new endpoint is deleted (it never served anyone and would bill by the hour); an
updated endpoint is put back on the config it served before and watched until it serves it again.
Either way the run then takes the failure path with the original error, the rollback's outcome
added as ``$.error.rollback``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.registration import model_data_source
from stacks.components.workflow.steps import (
    WorkflowResources,
    catch,
    lambda_step,
    sagemaker_sdk_step,
    sagemaker_step,
)

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["deploy"]

DEPLOYMENT = "$.run.deployment"
#: DescribeEndpoint statuses after which waiting longer cannot help.
_UNUSABLE = ("UpdateRollbackFailed", "Deleting")


def deploy(
    scope: Construct,
    r: WorkflowResources,
    *,
    then: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    create_model = sagemaker_step(
        scope,
        "Create model",
        "createModel",
        {
            "ModelName.$": f"{DEPLOYMENT}.model_name",
            "ExecutionRoleArn": r.model_role_arn,
            "PrimaryContainer": {
                "Image": r.serving_image_uri,
                "ModelDataSource": model_data_source(),
                "Environment.$": f"{DEPLOYMENT}.serving_environment",
            },
            "VpcConfig": {
                "SecurityGroupIds": [r.security_group_id],
                "Subnets": list(r.subnet_ids),
            },
            "EnableNetworkIsolation": True,
            "Tags.$": "$.run.tags",
        },
        comment="A SageMaker model: the serving container with the merged model, "
        "network-isolated, in the platform VPC; its name is unique to this deployment.",
    )
    create_config = sagemaker_step(
        scope,
        "Create endpoint config",
        "createEndpointConfig",
        {
            "EndpointConfigName.$": f"{DEPLOYMENT}.endpoint_config_name",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName.$": f"{DEPLOYMENT}.model_name",
                    "InstanceType.$": f"{DEPLOYMENT}.instance_type",
                    "InitialInstanceCount.$": f"{DEPLOYMENT}.initial_instance_count",
                    "ContainerStartupHealthCheckTimeoutInSeconds": 1200,
                    "ModelDataDownloadTimeoutInSeconds": 1200,
                }
            ],
            # No KmsKeyId for the storage volume: GPU instances (g5, g6, p4d...) serve from
            # NVMe instance storage, which is hardware-encrypted and for which SageMaker
            # rejects a KMS key. Captured data is encrypted with the platform key.
            "DataCaptureConfig": {
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": r.data_capture_s3_uri,
                "KmsKeyId": r.key_arn,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            },
            "Tags.$": "$.run.tags",
        },
        comment="One variant with the new model; requests and responses captured to S3.",
    )
    for state in (create_model, create_config):
        catch(state, on_failure)
    switch = _create_or_update(
        scope, r, wait=_wait_and_verify(scope, r, then, on_failure), on_failure=on_failure
    )
    return create_model.next(create_config).next(switch)


def _create_or_update(
    scope: Construct, r: WorkflowResources, *, wait: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    find_current = sagemaker_sdk_step(
        scope,
        "Find current endpoint",
        "describeEndpoint",
        {"EndpointName.$": f"{DEPLOYMENT}.endpoint_name"},
        comment="Does the endpoint exist? Then it is updated and can be rolled back.",
        result_path="$.endpoint.current",
    )
    create_endpoint = sagemaker_step(
        scope,
        "Create endpoint",
        "createEndpoint",
        {
            "EndpointName.$": f"{DEPLOYMENT}.endpoint_name",
            "EndpointConfigName.$": f"{DEPLOYMENT}.endpoint_config_name",
            "Tags.$": "$.run.tags",
        },
        comment="A new endpoint: on failure it is deleted again.",
    )
    update_endpoint = sagemaker_step(
        scope,
        "Update endpoint",
        "updateEndpoint",
        {
            "EndpointName.$": f"{DEPLOYMENT}.endpoint_name",
            "EndpointConfigName.$": f"{DEPLOYMENT}.endpoint_config_name",
        },
        comment="Blue/green update of the serving endpoint to the new config.",
    )
    for state in (create_endpoint, update_endpoint):
        catch(state, on_failure)
    lookup_failed = sfn.Pass(
        scope,
        "Endpoint lookup failed",
        comment="Throttling, access denied, ...: not a reason to create a second endpoint.",
        parameters={"Error.$": "$.endpoint.lookup.Error", "Cause.$": "$.endpoint.lookup.Cause"},
        result_path="$.error",
    )
    lookup_failed.next(on_failure)
    # DescribeEndpoint reports a missing endpoint as a ValidationException whose message says
    # "Could not find endpoint"; every other error is a real failure.
    missing = Condition.and_(
        Condition.is_present("$.endpoint.lookup.Cause"),
        Condition.string_matches("$.endpoint.lookup.Cause", "*Could not find endpoint*"),
    )
    endpoint_missing = (
        sfn.Choice(scope, "Endpoint missing?")
        .when(missing, create_endpoint)
        .otherwise(lookup_failed)
    )
    find_current.add_catch(endpoint_missing, errors=["States.ALL"], result_path="$.endpoint.lookup")
    delete_on_rollback = sfn.Pass(
        scope,
        "Nothing to roll back to",
        result=sfn.Result.from_object({"action": "delete"}),
        result_path="$.endpoint.rollback",
    )
    restore_on_rollback = sfn.Pass(
        scope,
        "Remember previous config",
        parameters={
            "action": "restore",
            "previous_config.$": "$.endpoint.current.EndpointConfigName",
        },
        result_path="$.endpoint.rollback",
    )
    not_updatable = sfn.Pass(
        scope,
        "Endpoint not updatable",
        parameters={
            "Error": "EndpointNotUpdatable",
            "Cause.$": "States.Format('endpoint {} is {}; wait for it or delete it', "
            f"{DEPLOYMENT}.endpoint_name, $.endpoint.current.EndpointStatus)",
        },
        result_path="$.error",
    )
    not_updatable.next(on_failure)
    create_endpoint.next(delete_on_rollback).next(wait)
    update_endpoint.next(restore_on_rollback).next(wait)
    updatable = Condition.and_(
        Condition.string_equals("$.endpoint.current.EndpointStatus", "InService"),
        Condition.is_present("$.endpoint.current.EndpointConfigName"),
    )
    ready = (
        sfn.Choice(scope, "Endpoint ready for update?")
        .when(updatable, update_endpoint)
        .otherwise(not_updatable)
    )
    return find_current.next(ready)


def _wait_and_verify(
    scope: Construct, r: WorkflowResources, then: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    rollback = _rollback(scope, on_failure)
    smoke = lambda_step(
        scope,
        "Smoke test endpoint",
        r.smoke_test_function,
        {
            "endpoint_name.$": f"{DEPLOYMENT}.endpoint_name",
            "model_artifacts.$": "$.training.model_artifacts",
        },
        result_path="$.smoke",
        comment="The endpoint answers, and scores a held-out example as training did; any "
        "failure rolls the endpoint back.",
    )
    catch(smoke, rollback)
    deployed = lambda_step(
        scope,
        "Record deployment",
        r.record_function,
        {
            "milestone": "deployed",
            "run.$": "$.run",
            "endpoint_name.$": f"{DEPLOYMENT}.endpoint_name",
            "smoke_test.$": "$.smoke",
        },
        result_path=None,
        comment="Add the endpoint to the run's outputs; a deployment that is not recorded is "
        "rolled back.",
    )
    catch(deployed, rollback)
    smoke.next(deployed).next(then)

    def failed(name: str, error: str, cause: str) -> sfn.Pass:
        return sfn.Pass(
            scope, name, parameters={"Error": error, "Cause.$": cause}, result_path="$.error"
        )

    rolled_back_by_sagemaker = failed(
        "Update rolled back by SageMaker",
        "EndpointUpdateFailed",
        "States.Format('endpoint {} did not take config {} and still serves its previous "
        f"config', {DEPLOYMENT}.endpoint_name, {DEPLOYMENT}.endpoint_config_name)",
    )
    rolled_back_by_sagemaker.next(on_failure)
    endpoint_failed = failed(
        "Endpoint failed",
        "EndpointFailed",
        "States.Format('endpoint {} failed on config {}; DescribeEndpoint shows the "
        f"FailureReason', {DEPLOYMENT}.endpoint_name, {DEPLOYMENT}.endpoint_config_name)",
    )
    endpoint_failed.next(rollback)
    unusable = failed(
        "Endpoint unusable",
        "EndpointUnusable",
        "States.Format('endpoint {} is {}: it needs a person (DescribeEndpoint shows why)', "
        f"{DEPLOYMENT}.endpoint_name, $.endpoint.status.EndpointStatus)",
    )
    unusable.next(on_failure)
    timed_out = failed(
        "Endpoint wait timed out",
        "EndpointWaitTimedOut",
        "States.Format('endpoint {} not in service after {} checks', "
        f"{DEPLOYMENT}.endpoint_name, $.endpoint.polls)",
    )
    timed_out.next(rollback)
    return _endpoint_watch(
        scope,
        _Watch(
            start="Start wait counter",
            wait="Wait for endpoint",
            check="Check endpoint status",
            verdict="Endpoint in service?",
            count="Count wait",
            store="Store wait count",
            too_long="Waited too long?",
            polls="$.endpoint.polls",
            status="$.endpoint.status",
            expected_config=f"{DEPLOYMENT}.endpoint_config_name",
            # The endpoint was created or updated by this run: undo it.
            error_path="$.error",
            on_error=rollback,
        ),
        serving=smoke,
        serving_other_config=rolled_back_by_sagemaker,
        failed=endpoint_failed,
        unusable=unusable,
        timed_out=timed_out,
    )


@dataclass(frozen=True)
class _Watch:
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


def _endpoint_watch(
    scope: Construct,
    watch: _Watch,
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
    serves_expected = Condition.and_(
        in_service,
        Condition.is_present(config),
        Condition.string_equals_json_path(config, watch.expected_config),
    )
    verdict = (
        sfn.Choice(scope, watch.verdict)
        .when(serves_expected, serving)
        .when(in_service, serving_other_config, comment="in service on another config")
        .when(Condition.string_equals(status, "Failed"), failed)
        .when(
            Condition.or_(*(Condition.string_equals(status, s) for s in _UNUSABLE)),
            unusable,
        )
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


def _rollback(scope: Construct, on_failure: sfn.IChainable) -> sfn.IChainable:
    """Undo this run's endpoint change, then fail with the original error."""
    restore = sagemaker_step(
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
        _endpoint_watch(
            scope,
            _Watch(
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
    return (
        sfn.Choice(scope, "Previous config to restore?")
        .when(Condition.string_equals("$.endpoint.rollback.action", "restore"), restore)
        .otherwise(delete)
    )
