"""The workflow definition as data: the resolved JSON of the states that matter."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llm_sft.metrics import METRIC_DEFINITIONS
from runspec.attempts import cause_patterns
from stacks.components.workflow import retries
from tests.infra.synth import Synthesized
from tests.workflow.definition import state_machine_definition


@pytest.fixture(scope="module")
def states(dev: Synthesized) -> dict[str, dict[str, Any]]:
    definition = state_machine_definition(dev)
    assert definition["StartAt"] == "Receive run request"
    return dict(definition["States"])


def test_train_runs_the_job_synchronously_with_fixed_security_settings(
    states: dict[str, dict[str, Any]],
) -> None:
    train = states["Train model"]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    parameters = train["Parameters"]
    assert parameters["RoleArn"].startswith("<TrainingJobRole")
    assert parameters["OutputDataConfig"]["KmsKeyId"].startswith("<")
    assert parameters["OutputDataConfig"]["CompressionType"] == "NONE"
    # VolumeKmsKeyId only for EBS-backed instance types: the launch function writes it
    # (tests/lambdas/test_launch_run.py).
    assert parameters["ResourceConfig.$"] == "$.run.training.resource_config"
    assert len(parameters["VpcConfig"]["Subnets"]) == 2
    assert len(parameters["VpcConfig"]["SecurityGroupIds"]) == 1
    assert parameters["EnableInterContainerTrafficEncryption"] is True
    assert parameters["AlgorithmSpecification"]["MetricDefinitions"] == [
        dict(d) for d in METRIC_DEFINITIONS
    ]
    assert parameters["CheckpointConfig"] == {
        "S3Uri.$": "$.run.training.checkpoint_s3_uri",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert parameters["ExperimentConfig"]["TrialName.$"] == "$.run.trial_name"
    assert parameters["Environment"]["MLFLOW_TRACKING_URI"].startswith("<Mlflow")
    # Only run-specific values come from the request (through the launch function's output).
    dynamic = {key for key in parameters if key.endswith(".$")}
    assert dynamic == {
        "TrainingJobName.$",
        "HyperParameters.$",
        "InputDataConfig.$",
        "EnableManagedSpotTraining.$",
        "StoppingCondition.$",
        "ResourceConfig.$",
        "Tags.$",
    }
    assert train["ResultPath"] == "$.training"
    assert train["Next"] == "Training completed?"
    completed = states["Training completed?"]
    assert completed["Choices"] == [
        {
            "Variable": "$.training.status",
            "StringEquals": "Completed",
            "Next": "Record training and evaluation",
        },
        # A spot job that waited too long for capacity: another attempt (runspec.attempts).
        {
            "Variable": "$.training.secondary_status",
            "StringEquals": "MaxWaitTimeExceeded",
            "Next": "Capacity retry left?",
        },
    ]
    assert completed["Default"] == "Training did not complete"
    assert parameters["TrainingJobName.$"] == "$.run.attempt.training_job_name"


def test_only_capacity_failures_train_again_and_boundedly(
    states: dict[str, dict[str, Any]],
) -> None:
    capacity, other = states["Train model"]["Catch"]
    assert capacity == {
        "ErrorEquals": ["States.TaskFailed"],
        "ResultPath": "$.error",
        "Next": "Capacity failure?",
    }
    assert other["ErrorEquals"] == ["States.ALL"]
    assert other["Next"] == "Run resolved?"
    missing_cause, matched = states["Capacity failure?"]["Choices"]
    assert missing_cause["Next"] == "Run resolved?"
    assert [rule["StringMatches"] for rule in matched["Or"]] == cause_patterns()
    assert matched["Next"] == "Capacity retry left?"
    assert states["Capacity failure?"]["Default"] == "Run resolved?"
    (left,) = states["Capacity retry left?"]["Choices"]
    assert left == {
        "Variable": "$.run.attempt.capacity_retries",
        "NumericLessThanPath": "$.run.training.capacity_retry.max_retries",
        "Next": "Next training attempt",
    }
    assert states["Capacity retry left?"]["Default"] == "Capacity retries exhausted"
    next_attempt = states["Next training attempt"]
    assert next_attempt["ResultPath"] == "$.run.attempt"
    assert next_attempt["Next"] == "Back off before the next attempt"
    assert states["Back off before the next attempt"] == {
        "Type": "Wait",
        "SecondsPath": "$.run.attempt.backoff_seconds",
        "Next": "Train model",
    }


def test_task_resources_carry_the_stack_partition(dev: Synthesized) -> None:
    """Every Task resource is built with ${AWS::Partition}, never a literal arn:aws:."""
    (machine,) = [
        r
        for r in dev.templates["Workflow"]["Resources"].values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    resources = re.findall(r'"Resource":"([^"]*)"', text)
    assert len(resources) == text.count('"Type":"Task"') >= 20
    # Lambda tasks: CDK renders the whole ARN as one partition-aware token.
    assert all(r == "<token>" or r.startswith("arn:<token>:states:::") for r in resources)


def test_every_task_is_caught_and_retried(states: dict[str, dict[str, Any]]) -> None:
    tasks = {name: state for name, state in states.items() if state["Type"] == "Task"}
    assert len(tasks) >= 18
    for name, state in tasks.items():
        assert state.get("Catch"), f"{name} has no Catch"
        assert state.get("Retry"), f"{name} has no Retry"
        for retry in state["Retry"]:
            assert retry["JitterStrategy"] == "FULL", name
            assert "States.ALL" not in retry["ErrorEquals"], name


def test_catches_lead_to_the_failure_record_then_notification(
    states: dict[str, dict[str, Any]],
) -> None:
    for name in ("Validate and resolve run", "Train model", "Register model", "Create model"):
        catch = states[name]["Catch"][-1]  # training catches capacity failures first
        assert catch == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "Run resolved?",
        }
    resolved = states["Run resolved?"]
    assert resolved["Choices"][0]["Next"] == "Record failure"
    assert resolved["Default"] == "Record invalid request"
    assert states["Record failure"]["Next"] == "Notify run failed"
    assert states["Record failure"]["Catch"][0]["Next"] == "Notify run failed"
    assert states["Notify run failed"]["Next"] == "Reserved error name?"


def test_retry_policies_match_each_service(states: dict[str, dict[str, Any]]) -> None:
    (lambda_retry,) = states["Validate and resolve run"]["Retry"]
    assert lambda_retry["ErrorEquals"] == retries.LAMBDA_TRANSIENT
    assert lambda_retry["MaxAttempts"] == 6
    assert lambda_retry["BackoffRate"] == 2
    (train_retry,) = states["Train model"]["Retry"]
    assert train_retry["ErrorEquals"] == ["SageMaker.AmazonSageMakerException"]
    # A second CreateTrainingJob with the same name can only fail: one retry at most.
    assert train_retry["MaxAttempts"] == 2
    (describe_retry,) = states["Check endpoint status"]["Retry"]
    assert describe_retry["ErrorEquals"] == ["SageMaker.SageMakerException"]
    (sns_retry,) = states["Notify run succeeded"]["Retry"]
    assert sns_retry["ErrorEquals"] == retries.SNS_TRANSIENT


def test_the_gate_follows_the_record_functions_decision(
    states: dict[str, dict[str, Any]],
) -> None:
    gate = states["Passes evaluation gate?"]
    assert gate["Choices"] == [
        {
            "Variable": "$.recorded.evaluation.passed",
            "BooleanEquals": True,
            "Next": "Register model",
        }
    ]
    assert gate["Default"] == "Record gate rejection"


def test_deploy_only_when_requested_and_approved(states: dict[str, dict[str, Any]]) -> None:
    deploy = states["Deploy?"]
    (choice,) = deploy["Choices"]
    assert choice["And"] == [
        {"Variable": "$.run.deployment.enabled", "BooleanEquals": True},
        {"Variable": "$.run.deployment.approved", "BooleanEquals": True},
    ]
    assert choice["Next"] == "Create model"
    assert deploy["Default"] == "Record completion"


def test_endpoint_wait_is_bounded_and_failures_roll_back(
    states: dict[str, dict[str, Any]],
) -> None:
    assert states["Wait for endpoint"]["SecondsPath"] == "$.run.deployment.poll_seconds"
    waited = states["Waited too long?"]
    assert waited["Choices"][0]["NumericGreaterThanEqualsPath"] == "$.run.deployment.max_polls"
    assert waited["Default"] == "Wait for endpoint"
    assert states["Count wait"]["Parameters"] == {"value.$": "States.MathAdd($.endpoint.polls, 1)"}
    # A rollback first waits until the endpoint has left Creating/Updating (SageMaker refuses
    # DeleteEndpoint and UpdateEndpoint meanwhile), bounded like the deployment wait.
    assert states["Smoke test endpoint"]["Catch"][0]["Next"] == "Start rollback wait counter"
    assert states["Endpoint wait timed out"]["Next"] == "Start rollback wait counter"
    settled = states["Endpoint settled?"]
    assert {c["StringEquals"] for c in settled["Choices"][0]["Or"]} == {
        "Creating",
        "Updating",
        "SystemUpdating",
        "RollingBack",
    }
    assert settled["Default"] == "Previous config to restore?"
    too_long = states["Waited too long to roll back?"]["Choices"][0]
    assert too_long["NumericGreaterThanEqualsPath"] == "$.run.deployment.max_polls"
    assert too_long["Next"] == "Rollback blocked"
    rollback = states["Previous config to restore?"]
    assert rollback["Choices"] == [
        {
            "Variable": "$.endpoint.rollback.action",
            "StringEquals": "restore",
            "Next": "Restore previous endpoint config",
        }
    ]
    assert rollback["Default"] == "Delete failed endpoint"
    assert states["Nothing to roll back to"]["Result"] == {"action": "delete"}
    restore = states["Restore previous endpoint config"]
    assert restore["Parameters"]["EndpointConfigName.$"] == "$.endpoint.rollback.previous_config"
    assert restore["Next"] == "Start restore wait counter"
    verdict = states["Restored endpoint in service?"]
    assert verdict["Choices"][3]["Next"] == "Previous config serves again"
    # Terminal statuses end the wait at once; anything else is polled again.
    choices = states["Endpoint in service?"]["Choices"]
    assert choices[0] == {
        "Variable": "$.endpoint.status.EndpointStatus",
        "StringEquals": "Failed",
        "Next": "Endpoint failed",
    }
    assert choices[1]["Next"] == "Endpoint unusable"
    assert {c["StringEquals"] for c in choices[1]["Or"]} == {"UpdateRollbackFailed", "Deleting"}
    # The config name is compared only after a rule that takes the missing-name case.
    assert choices[2]["Not"] == {
        "Variable": "$.endpoint.status.EndpointConfigName",
        "IsPresent": True,
    }
    assert choices[3]["Next"] == "Smoke test endpoint"


def _rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    nested = [*rule.get("And", []), *rule.get("Or", []), *([rule["Not"]] if "Not" in rule else [])]
    return [rule, *(r for n in nested for r in _rules(n))]


def test_no_choice_relies_on_and_stopping_early(states: dict[str, dict[str, Any]]) -> None:
    """AWS does not document that ``And`` stops at its first false operand: an optional field is
    tested in an earlier rule (rules are tried in order), never beside its comparison."""
    for name, state in states.items():
        for choice in state.get("Choices", []):
            for rule in _rules(choice):
                for operand in rule.get("And", []):
                    assert "IsPresent" not in operand, name


def test_sagemaker_calls_use_the_sdk_integration(states: dict[str, dict[str, Any]]) -> None:
    """The optimised integrations validate against Step Functions' own schema, which may lag the
    API: only training, which needs ``.sync``, uses one."""
    resources = {
        name: state["Resource"]
        for name, state in states.items()
        if state["Type"] == "Task" and ":sagemaker:" in state["Resource"]
    }
    optimised = {name for name, r in resources.items() if ":states:::sagemaker:" in r}
    assert optimised == {"Train model"}
    assert len(resources) >= 10


def test_model_is_served_network_isolated_in_the_vpc(states: dict[str, dict[str, Any]]) -> None:
    model = states["Create model"]["Parameters"]
    assert model["EnableNetworkIsolation"] is True
    assert model["ExecutionRoleArn"].startswith("<ModelRole")
    assert model["PrimaryContainer"]["Image"].endswith(
        "huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04"
    )
    config = states["Create endpoint config"]["Parameters"]
    assert config["DataCaptureConfig"]["KmsKeyId"].startswith("<")
    register = states["Register model"]["Parameters"]
    # At most 36 of [a-zA-Z0-9-] (the API): a hash of the job name, which reaches 63.
    assert register["ClientToken.$"] == "States.Hash($.run.training_job_name, 'MD5')"
    assert "Tags.$" not in register
    assert "Tags" not in register
    assert register["SecurityConfig"]["KmsKeyId"].startswith("<")


def test_a_retried_run_resumes_at_its_first_step_not_completed(
    states: dict[str, dict[str, Any]],
) -> None:
    """runspec.retry writes $.run.resume; each later step restores what the earlier produced."""
    assert states["Record run started"]["Next"] == "Resume where?"
    guard, recording, after = states["Resume where?"]["Choices"]
    # A run that is not retried has resume null: guarded before any rule reads the step.
    assert guard == {
        "Not": {"Variable": "$.run.resume.step", "IsPresent": True},
        "Next": "Train model",
    }
    assert recording["Next"] == "Resume with the completed job"
    assert after["Next"] == "Resume with the trained model"
    assert states["Resume where?"]["Default"] == "Train model"
    restored = {
        name: (states[name]["InputPath"], states[name]["ResultPath"], states[name]["Next"])
        for name in (
            "Resume with the completed job",
            "Resume with the trained model",
            "Resume with its evaluation",
            "Resume with its model package",
        )
    }
    assert restored == {
        "Resume with the completed job": (
            "$.run.resume.training",
            "$.training",
            "Record training and evaluation",
        ),
        "Resume with the trained model": (
            "$.run.resume.training",
            "$.training",
            "Resume with its evaluation",
        ),
        "Resume with its evaluation": (
            "$.run.resume.recorded",
            "$.recorded",
            "Registered already?",
        ),
        "Resume with its model package": (
            "$.run.resume.registration",
            "$.registration",
            "Deploy or complete?",
        ),
    }
    assert states["Registered already?"]["Choices"][0]["Next"] == "Register model"
    assert states["Deploy or complete?"]["Choices"][0]["Next"] == "Deploy?"
    assert states["Deploy or complete?"]["Default"] == "Record completion"
    # A failure is recorded with the job that completed ({} until one did).
    assert states["Receive run request"]["Parameters"]["training"] == {}
    assert states["Record failure"]["Parameters"]["training.$"] == "$.training"
