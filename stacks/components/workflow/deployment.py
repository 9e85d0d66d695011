"""Deploy: model, endpoint config, create or update the endpoint, wait until it serves the new
config, smoke-test it, record it; roll back on any failure so that nothing is left broken.

Rollback: a new endpoint is deleted (it never served anyone and would bill by the hour); an
updated endpoint is put back on the config it served before and watched until it serves it again.
Either way the run then takes the failure path with the original error, the rollback's outcome
added as ``$.error.rollback``. A rollback first waits (bounded) until the endpoint has left
Creating/Updating: SageMaker refuses to delete or update an endpoint in transition.

Every SageMaker call here uses the AWS SDK integration (``aws-sdk:sagemaker:*``), whose input is
the SageMaker API model: the optimised integrations validate against Step Functions' own schema,
which may lag the API (fields it does not know fail deployment, or fail the run with an
uncatchable States.Runtime when passed through a ``.$`` object). Only training keeps the
optimised ``createTrainingJob.sync``, the one with no SDK equivalent.

Choice rules never rely on ``And`` stopping early (AWS does not document it): a rule that reads
an optional field comes after a rule that matches when the field is missing.
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.endpoint_watch import DEPLOYMENT, Watch, endpoint_watch
from stacks.components.workflow.registration import model_data_source
from stacks.components.workflow.rollback import rollback as build_rollback
from stacks.components.workflow.steps import (
    WorkflowResources,
    catch,
    lambda_step,
    sagemaker_sdk_step,
)

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["deploy"]


def deploy(
    scope: Construct,
    r: WorkflowResources,
    *,
    then: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    create_model = sagemaker_sdk_step(
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
    create_config = sagemaker_sdk_step(
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
            # NVMe instance storage, which is hardware-encrypted and which the key would not
            # encrypt (API reference). Captured data is encrypted with the platform key.
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
    create_endpoint = sagemaker_sdk_step(
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
    update_endpoint = sagemaker_sdk_step(
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
    cause = "$.endpoint.lookup.Cause"
    endpoint_missing = (
        sfn.Choice(scope, "Endpoint missing?")
        .when(Condition.not_(Condition.is_present(cause)), lookup_failed)
        .when(Condition.string_matches(cause, "*Could not find endpoint*"), create_endpoint)
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
    ready = (
        sfn.Choice(scope, "Endpoint ready for update?")
        .when(
            Condition.not_(Condition.is_present("$.endpoint.current.EndpointConfigName")),
            not_updatable,
        )
        .when(
            Condition.string_equals("$.endpoint.current.EndpointStatus", "InService"),
            update_endpoint,
        )
        .otherwise(not_updatable)
    )
    return find_current.next(ready)


def _wait_and_verify(
    scope: Construct, r: WorkflowResources, then: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    rollback = build_rollback(scope, on_failure)
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
    return endpoint_watch(
        scope,
        Watch(
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
