"""Studio and tracking stacks: VPC-only domain, scoped execution role, MLflow, registry."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import Synthesized


def statements(synthesized: Synthesized, stack: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in synthesized.template(stack).find_resources("AWS::IAM::ManagedPolicy").values():
        found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def test_domain_is_vpc_only_iam_auth_encrypted_and_retained(dev: Synthesized) -> None:
    dev.template("Studio").has_resource(
        "AWS::SageMaker::Domain",
        {
            "Properties": {
                "AppNetworkAccessType": "VpcOnly",
                "AuthMode": "IAM",
                "KmsKeyId": {"Fn::ImportValue": Match.string_like_regexp("PlatformKey")},
                "SubnetIds": Match.any_value(),
                "VpcId": {"Fn::ImportValue": Match.string_like_regexp("Vpc")},
            },
            "DeletionPolicy": "Retain",
        },
    )


def test_idle_apps_shut_down(dev: Synthesized) -> None:
    idle = {
        "AppLifecycleManagement": {
            "IdleSettings": Match.object_like(
                {"LifecycleManagement": "ENABLED", "IdleTimeoutInMinutes": 60}
            )
        }
    }
    dev.template("Studio").has_resource_properties(
        "AWS::SageMaker::Domain",
        {
            "DefaultUserSettings": Match.object_like(
                {
                    "ExecutionRole": Match.any_value(),
                    "JupyterLabAppSettings": Match.object_like(idle),
                    "CodeEditorAppSettings": Match.object_like(idle),
                }
            )
        },
    )


def test_one_user_profile_per_configured_user(dev: Synthesized, prod: Synthesized) -> None:
    dev.template("Studio").resource_count_is("AWS::SageMaker::UserProfile", 1)
    prod_profiles = prod.template("Studio").find_resources("AWS::SageMaker::UserProfile")
    assert sorted(p["Properties"]["UserProfileName"] for p in prod_profiles.values()) == [
        "data-scientist-1",
        "data-scientist-2",
        "ml-lead",
    ]
    for profile in prod_profiles.values():
        assert profile["DeletionPolicy"] == "Retain"


def test_execution_role_has_no_aws_managed_policies(dev: Synthesized) -> None:
    for role in dev.template("Studio").find_resources("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]


def test_execution_role_scopes_workflow_registry_and_mlflow(dev: Synthesized) -> None:
    by_sid = {s.get("Sid"): s for s in statements(dev, "Studio")}
    start = by_sid["RunFineTuningWorkflow"]
    assert "states:StartExecution" in start["Action"]
    assert "stateMachine:llmft-dev-finetune" in str(start["Resource"])
    approve = by_sid["DecideApproval"]
    assert approve["Action"] == "sagemaker:UpdateModelPackage"
    assert "model-package/llmft-dev-models/*" in str(approve["Resource"])
    assert approve["Condition"] == {
        "StringEquals": {"sagemaker:ModelApprovalStatus": ["Approved", "Rejected"]}
    }
    assert by_sid["NeverRewriteEvalLoss"]["Effect"] == "Deny"
    mlflow = by_sid["LogToMlflowApp"]
    assert "sagemaker:CallMlflowAppApi" in mlflow["Action"]
    assert mlflow["Resource"] == {"Fn::ImportValue": Match.any_value()} or "ImportValue" in str(
        mlflow["Resource"]
    )


#: Actions that support no resource-level permissions (IAM service authorization reference).
UNSCOPABLE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",  # scoped by a cloudwatch:namespace condition instead
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # ENIs for VPC jobs and functions; creation is confined by an ec2:Vpc condition where the
    # caller is SageMaker.
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def test_star_resources_only_for_actions_that_cannot_be_scoped(dev: Synthesized) -> None:
    for stack in dev.templates:
        for statement in statements(dev, stack):
            if statement["Effect"] == "Deny":
                continue  # a Deny on "*" only takes access away
            resources = statement["Resource"]
            if resources == "*" or (isinstance(resources, list) and "*" in resources):
                actions = statement["Action"]
                for action in actions if isinstance(actions, list) else [actions]:
                    verb = action.split(":")[1]
                    assert (
                        verb.startswith(("List", "Search", "Describe"))
                        or action in UNSCOPABLE_ACTIONS
                    ), (stack, statement)


def test_mlflow_app_stores_artifacts_in_the_artifacts_bucket_and_registers_models(
    dev: Synthesized,
) -> None:
    dev.template("Tracking").has_resource(
        "AWS::SageMaker::MlflowApp",
        {
            "Properties": {
                "Name": "llmft-dev-mlflow",
                "ArtifactStoreUri": {
                    "Fn::Join": ["", Match.array_with(["s3://llmft-dev-artifacts-", "/mlflow"])]
                },
                "ModelRegistrationMode": "AutoModelRegistrationEnabled",
                "RoleArn": Match.any_value(),
            },
            "DeletionPolicy": "Retain",
        },
    )


def test_model_package_group_is_retained_and_exported(dev: Synthesized) -> None:
    template = dev.template("Tracking")
    template.has_resource(
        "AWS::SageMaker::ModelPackageGroup",
        {"Properties": {"ModelPackageGroupName": "llmft-dev-models"}, "DeletionPolicy": "Retain"},
    )
    template.has_output("ModelPackageGroupName", {"Value": "llmft-dev-models"})
    template.has_output("MlflowTrackingArn", {"Value": Match.any_value()})
