"""The twin refuses what AWS refuses: each rule the patches add to moto, on the smallest request
or state machine that shows it (the workflow tests show them on the platform's own)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from finetune.local.emulator import MOTO_CONFIG
from finetune.local.executions import ExecutionResult, wait_for_execution
from finetune.local.moto_patches import all_rules, patched_moto

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sfn"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws(config=MOTO_CONFIG), patched_moto():
        boto3.client("iam", region_name=REGION).create_role(
            RoleName="sfn", AssumeRolePolicyDocument="{}"
        )
        yield


def execute(definition: dict[str, Any], payload: dict[str, Any] | None = None) -> ExecutionResult:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name=f"m{len(sfn.list_state_machines()['stateMachines'])}",
        definition=json.dumps(definition),
        roleArn=ROLE,
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload or {}))
    return wait_for_execution(sfn, execution["executionArn"], timeout_seconds=30)


CAUGHT = {"Type": "Pass", "End": True}


def test_a_choice_on_a_missing_path_fails_the_execution(aws: None) -> None:
    result = execute(
        {
            "StartAt": "Choose",
            "States": {
                "Choose": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.missing", "IsString": True, "Next": "Yes"}],
                    "Default": "No",
                },
                "Yes": {"Type": "Succeed"},
                "No": {"Type": "Succeed"},
            },
        }
    )
    assert result.status == "FAILED"
    assert result.error == "States.Runtime"
    assert "$.missing" in (result.cause or "")


def test_is_present_may_test_a_missing_path(aws: None) -> None:
    result = execute(
        {
            "StartAt": "Choose",
            "States": {
                "Choose": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.missing", "IsPresent": True, "Next": "Yes"}],
                    "Default": "No",
                },
                "Yes": {"Type": "Fail", "Error": "Wrong"},
                "No": {"Type": "Succeed"},
            },
        }
    )
    assert result.status == "SUCCEEDED"


def test_states_runtime_escapes_every_catch(aws: None) -> None:
    result = execute(
        {
            "StartAt": "Describe",
            "States": {
                "Describe": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint",
                    "Parameters": {"EndpointName.$": "$.missing"},
                    "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}],
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                    "End": True,
                },
                "Caught": CAUGHT,
            },
        }
    )
    assert result.status == "FAILED"
    assert result.error == "States.Runtime"
    assert "Caught" not in result.states


def test_sagemaker_errors_carry_aws_names(aws: None) -> None:
    def failing(resource: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {
            "StartAt": "Call",
            "States": {
                "Call": {
                    "Type": "Task",
                    "Resource": resource,
                    "Parameters": parameters,
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                    "ResultPath": "$.result",
                    "End": True,
                },
                "Caught": {"Type": "Pass", "End": True},
            },
        }

    sdk = execute(
        failing("arn:aws:states:::aws-sdk:sagemaker:describeEndpoint", {"EndpointName": "none"})
    )
    optimised = execute(
        failing(
            "arn:aws:states:::sagemaker:createEndpoint",
            {"EndpointName": "e", "EndpointConfigName": "none"},
        )
    )
    assert sdk.task_failures[0]["error"] == "SageMaker.SageMakerException"
    assert "Could not find endpoint" in sdk.task_failures[0]["cause"]
    assert optimised.task_failures[0]["error"] == "SageMaker.AmazonSageMakerException"
    assert (
        "Service: AmazonSageMaker; Status Code: 400; Error Code: ValidationException"
        in (optimised.task_failures[0]["cause"])
    )


def _training_job(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TrainingJobName": "job-1",
        "AlgorithmSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/img:1",
            "TrainingInputMode": "File",
        },
        "RoleArn": "arn:aws:iam::123456789012:role/training",
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/models/"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 50,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    request.update(changes)
    return request


def _refused(call: Any, **request: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(**request)
    return str(raised.value)


def test_sagemaker_names_are_unique(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_training_job(**_training_job())
    assert "training job with this name already exists" in _refused(
        sagemaker.create_training_job, **_training_job()
    )
    model = {"ModelName": "m", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/model"}
    sagemaker.create_model(**model, PrimaryContainer={"Image": "x"})
    assert "Cannot create already existing model" in _refused(
        sagemaker.create_model, **model, PrimaryContainer={"Image": "x"}
    )


def test_endpoint_and_config_names_are_unique(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(
        ModelName="m",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/model",
        PrimaryContainer={"Image": "x"},
    )
    config = {
        "EndpointConfigName": "c",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "m",
                "InstanceType": "ml.g5.2xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    }
    sagemaker.create_endpoint_config(**config)
    assert "Cannot create already existing endpoint configuration" in _refused(
        sagemaker.create_endpoint_config, **config
    )
    sagemaker.create_endpoint(EndpointName="Chat", EndpointConfigName="c")
    # "The name is case-insensitive in CreateEndpoint" (API reference).
    assert "Cannot create already existing endpoint" in _refused(
        sagemaker.create_endpoint, EndpointName="chat", EndpointConfigName="c"
    )


def test_an_endpoint_in_transition_can_be_neither_deleted_nor_updated(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    test_endpoint_and_config_names_are_unique(aws)
    # The twin reports Creating for one DescribeEndpoint, as SageMaker does for minutes.
    assert sagemaker.describe_endpoint(EndpointName="Chat")["EndpointStatus"] == "Creating"
    assert "Cannot delete in-progress endpoint" in _refused(
        sagemaker.delete_endpoint, EndpointName="Chat"
    )
    assert "Cannot update in-progress endpoint" in _refused(
        sagemaker.update_endpoint, EndpointName="Chat", EndpointConfigName="c"
    )
    assert sagemaker.describe_endpoint(EndpointName="Chat")["EndpointStatus"] == "InService"
    sagemaker.update_endpoint(EndpointName="Chat", EndpointConfigName="c")
    assert sagemaker.describe_endpoint(EndpointName="Chat")["EndpointStatus"] == "Updating"
    assert sagemaker.describe_endpoint(EndpointName="Chat")["EndpointStatus"] == "InService"
    sagemaker.delete_endpoint(EndpointName="Chat")


def test_a_versioned_model_package_takes_no_tags(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model_package_group(ModelPackageGroupName="g")
    package = {
        "ModelPackageGroupName": "g",
        "InferenceSpecification": {
            "Containers": [{"Image": "x"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    }
    assert "Tags cannot be supplied with ModelPackageGroupName" in _refused(
        sagemaker.create_model_package, **package, Tags=[{"Key": "k", "Value": "v"}]
    )
    sagemaker.create_model_package(**package)


def test_the_payload_limit_escapes_states_all_but_not_its_own_name(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="big")
    for index in range(300):  # 300 keys of 1,000 characters: a listing over 256 KiB
        s3.put_object(Bucket="big", Key=f"{index:04d}" + "k" * 996, Body=b"")

    def over_limit(catch: str) -> ExecutionResult:
        # The task's result is over 256 KiB: States.DataLimitExceeded.
        return execute(
            {
                "StartAt": "Task",
                "States": {
                    "Task": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::aws-sdk:s3:listObjectsV2",
                        "Parameters": {"Bucket": "big"},
                        "Catch": [{"ErrorEquals": [catch], "Next": "Caught"}],
                        "End": True,
                    },
                    "Caught": CAUGHT,
                },
            }
        )

    escaped = over_limit("States.ALL")
    assert escaped.status == "FAILED"
    assert escaped.error == "States.DataLimitExceeded"
    assert over_limit("States.DataLimitExceeded").status == "SUCCEEDED"


def test_no_volume_key_for_instances_with_local_storage(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    nvme = {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    message = _refused(
        sagemaker.create_training_job,
        **_training_job(ResourceConfig={**nvme, "VolumeKmsKeyId": "arn:aws:kms:k"}),
    )
    assert "You can't request a VolumeKmsKeyId when using an instance type with local storage" in (
        message
    )
    ebs = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    sagemaker.create_training_job(
        **_training_job(ResourceConfig={**ebs, "VolumeKmsKeyId": "arn:aws:kms:k"})
    )


def test_documented_parameter_constraints_are_enforced(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    too_long = _refused(
        sagemaker.create_training_job, **_training_job(Environment={"FT_IDENTITY": "x" * 513})
    )
    assert "at 'environment.FT_IDENTITY.value'" in too_long
    assert "length less than or equal to 512" in too_long
    bad_name = _refused(sagemaker.create_training_job, **_training_job(TrainingJobName="a_b"))
    assert "regular expression pattern" in bad_name
    bad_instance = _refused(
        sagemaker.create_training_job,
        **_training_job(
            ResourceConfig={"InstanceType": "ml.x9.huge", "InstanceCount": 1, "VolumeSizeInGB": 5}
        ),
    )
    assert "enum value set" in bad_instance


def test_spot_training_needs_a_longer_wait_than_runtime(aws: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert "MaxWaitTimeInSeconds" in _refused(
        sagemaker.create_training_job, **_training_job(EnableManagedSpotTraining=True)
    )


def test_every_patch_names_the_rule_it_enforces() -> None:
    rules = all_rules()
    assert len(rules) >= 10
    assert all(len(rule) > 20 for rule in rules)
