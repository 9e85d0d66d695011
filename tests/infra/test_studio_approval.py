"""Approving a model package in Studio's Model Registry starts the platform's deploy path: an
EventBridge rule on the package state change, scoped to the platform's group and to Approved,
starts the state machine with the approved package, through a role that may do nothing else."""

from __future__ import annotations

from typing import Any

from tests.infra.synth import Synthesized


def _approval_rule(synthesized: Synthesized) -> dict[str, Any]:
    rules = synthesized.template("Studio").find_resources("AWS::Events::Rule")
    (rule,) = rules.values()
    return rule["Properties"]


def test_rule_matches_approvals_of_the_platform_group_only(dev: Synthesized) -> None:
    rule = _approval_rule(dev)

    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {
            "ModelPackageGroupName": ["llmft-dev-models"],
            "ModelApprovalStatus": ["Approved"],
        },
    }


def test_rule_starts_the_state_machine_with_the_approved_package(dev: Synthesized) -> None:
    (target,) = _approval_rule(dev)["Targets"]

    assert ":states:" in str(target["Arn"])
    assert "stateMachine:llmft-dev-finetune" in str(target["Arn"])
    transformer = target["InputTransformer"]
    # The documented event detail names the package (ModelPackageArn); the launch function finds
    # the run from the package's platform-written metadata.
    assert transformer["InputPathsMap"] == {"detail-ModelPackageArn": "$.detail.ModelPackageArn"}
    assert transformer["InputTemplate"] == '{"approved_package":<detail-ModelPackageArn>}'
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 24 * 3600


def test_rule_role_may_only_start_this_state_machine(dev: Synthesized) -> None:
    template = dev.template("Studio")
    (target,) = _approval_rule(dev)["Targets"]
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    role = template.to_json()["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    # Only for this account's rule (confused deputy).
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":rule/llmft-dev-deploy-approved-models" in str(trust["Condition"]["ArnEquals"])

    granted = [
        statement
        for policy in template.find_resources("AWS::IAM::ManagedPolicy").values()
        if {"Ref": role_id} in policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert len(granted) == 1
    (statement,) = granted
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "states:StartExecution"
    assert "stateMachine:llmft-dev-finetune" in str(statement["Resource"])
    assert "*" not in str(statement["Resource"])
