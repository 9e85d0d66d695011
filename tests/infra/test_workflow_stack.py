"""Workflow stack: what the state machine, functions, roles and image are allowed to do."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import Synthesized


def managed_statements(dev: Synthesized, role_prefix: str) -> list[dict[str, Any]]:
    template = dev.template("Workflow")
    found = []
    for name, policy in template.find_resources("AWS::IAM::ManagedPolicy").items():
        if name.startswith(role_prefix):
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    assert found, role_prefix
    return found


def by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def test_state_machine_logs_all_to_an_encrypted_group_and_traces(dev: Synthesized) -> None:
    template = dev.template("Workflow")
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineName": "llmft-dev-finetune",
            "StateMachineType": "STANDARD",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": {
                "Level": "ALL",
                "IncludeExecutionData": True,
                "Destinations": Match.any_value(),
            },
        },
    )
    template.has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {
                "LogGroupName": "/aws/vendedlogs/states/llmft-dev-finetune",
                "KmsKeyId": Match.any_value(),
                "RetentionInDays": 365,
            },
            "DeletionPolicy": "Retain",
        },
    )


def test_failed_runs_raise_an_alarm_that_notifies_the_topic(dev: Synthesized) -> None:
    template = dev.template("Workflow")
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^NotificationsTopic")}],
            "Metrics": Match.array_with([Match.object_like({"Expression": "failed + timedout"})]),
        },
    )
    template.has_resource_properties(
        "AWS::SNS::Topic", {"TopicName": "llmft-dev-runs", "KmsMasterKeyId": Match.any_value()}
    )


def test_functions_run_in_the_vpc_with_tracing_json_logs_and_limits(dev: Synthesized) -> None:
    functions = dev.template("Workflow").find_resources("AWS::Lambda::Function")
    assert len(functions) == 3
    for function in functions.values():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.14"
        assert properties["Architectures"] == ["arm64"]
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert properties["LoggingConfig"]["LogFormat"] == "JSON"
        assert properties["ReservedConcurrentExecutions"] == 10
        assert len(properties["VpcConfig"]["SubnetIds"]) == 2
        assert "AWSLambdaPowertoolsPythonV3-python314-arm64" in str(properties["Layers"])


def test_state_machine_role_is_scoped_to_the_platforms_resources(dev: Synthesized) -> None:
    statements = by_sid(managed_statements(dev, "WorkflowRole"))
    training = statements["RunTrainingJobs"]
    assert training["Resource"]["Fn::Join"][1][-1] == ":training-job/llmft-dev-*"
    passing = statements["PassSageMakerRoles"]
    assert passing["Action"] == "iam:PassRole"
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert len(passing["Resource"]) == 2
    deploy = statements["DeployModels"]
    assert "sagemaker:UpdateEndpoint" in deploy["Action"]
    assert all("/llmft-dev-*" in str(resource) for resource in deploy["Resource"])


def test_training_role_reads_datasets_writes_only_models_and_checkpoints(dev: Synthesized) -> None:
    statements = by_sid(managed_statements(dev, "TrainingJobRole"))
    writes = statements["WriteModelsAndCheckpoints"]
    resources = str(writes["Resource"])
    assert "/models/*" in resources
    assert "/checkpoints/*" in resources
    assert "s3:DeleteObject" not in str(statements)
    assert statements["ManageNetworkInterfacesInPlatformVpc"]["Condition"]["ArnEquals"]["ec2:Vpc"]
    assert statements["PublishMetrics"]["Condition"] == {
        "StringLike": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
    }


def test_launch_function_can_start_only_this_workflow(dev: Synthesized) -> None:
    statements = by_sid(managed_statements(dev, "LaunchRunRole"))
    start = statements["StartRuns"]
    assert start["Action"] == "states:StartExecution"
    assert ":stateMachine:llmft-dev-finetune" in str(start["Resource"])
    assert statements["PinTrainingImageDigest"]["Action"] == "ecr:DescribeImages"


def test_regional_huggingface_images_resolve_through_a_mapping(dev: Synthesized) -> None:
    mappings = dev.templates["Workflow"]["Mappings"]
    assert mappings["HuggingFaceTrainingRegistries"]["eu-west-1"] == {"account": "763104351884"}
    assert "us-east-1" in mappings["HuggingFaceTgiRegistries"]


def test_prod_pins_images_to_its_region_without_a_mapping(prod: Synthesized) -> None:
    assert "Mappings" not in prod.templates["Workflow"] or not any(
        name.startswith("HuggingFace") for name in prod.templates["Workflow"]["Mappings"]
    )
