"""The IAM twin: its evaluator, and the platform's principals against their synthesized policies.

Every workflow test already runs with the twin (tests/workflow/conftest.py asserts no call was
refused and reports coverage); these tests show the rules one by one, the defects the twin found
(each failed before its fix), and the tightened Studio role.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from botocore.exceptions import ClientError

from finetune.local.iam.policy import AccessRequest, Principal, UnsupportedPolicyError, evaluate
from finetune.local.iam.twin import IamTwin
from tests.workflow.conftest import Workflow

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/r"
ME = Principal(arn=ROLE, account=ACCOUNT)


def allowed(
    statements: list[dict[str, Any]],
    action: str,
    resource: str,
    context: dict[str, Any] | None = None,
    *,
    resource_policy: dict[str, Any] | None = None,
    key_policy: bool = False,
    principal: Principal = ME,
) -> bool:
    decision = evaluate(
        principal,
        AccessRequest(action, resource, context or {}),
        identity_policies=[{"Statement": statements}],
        resource_policy=resource_policy,
        key_policy=key_policy,
    )
    return decision.allowed


def allow(action: str, resource: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


# -- the evaluator ---------------------------------------------------------------------------


def test_wildcards_match_actions_case_insensitively_and_resources_exactly() -> None:
    policy = [allow("S3:Get*", "arn:aws:s3:::b/models/*")]
    assert allowed(policy, "s3:GetObject", "arn:aws:s3:::b/models/run/x")
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::b/Models/run/x")
    assert not allowed(policy, "s3:PutObject", "arn:aws:s3:::b/models/run/x")
    assert allowed(
        [allow("s3:GetObject", "arn:aws:s3:::b/m?")], "s3:GetObject", "arn:aws:s3:::b/m1"
    )


def test_an_explicit_deny_wins() -> None:
    policy = [
        allow("s3:*", "*"),
        {"Effect": "Deny", "Action": "s3:DeleteObjectVersion", "Resource": "*"},
    ]
    assert allowed(policy, "s3:DeleteObject", "arn:aws:s3:::b/k")
    assert not allowed(policy, "s3:DeleteObjectVersion", "arn:aws:s3:::b/k")


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        ({"StringLike": {"s3:prefix": ["runs/*"]}}, {"s3:prefix": "runs/a"}, True),
        ({"StringLike": {"s3:prefix": ["runs/*"]}}, {"s3:prefix": "models/a"}, False),
        ({"StringLike": {"s3:prefix": ["runs/*"]}}, {}, False),
        ({"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
         {"iam:PassedToService": "sagemaker.amazonaws.com"}, True),
        ({"StringNotEquals": {"aws:SourceAccount": ACCOUNT}}, {}, True),
        ({"StringEqualsIfExists": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}, {}, True),
        ({"ArnLike": {"ec2:Vpc": "arn:aws:ec2:*:*:vpc/vpc-1"}},
         {"ec2:Vpc": "arn:aws:ec2:us-east-1:1:vpc/vpc-1"}, True),
        ({"Bool": {"aws:SecureTransport": "false"}}, {}, False),
        ({"NumericLessThan": {"s3:TlsVersion": "1.2"}}, {"s3:TlsVersion": "1.3"}, False),
        ({"Null": {"sagemaker:ModelApprovalStatus": "false"}},
         {"sagemaker:ModelApprovalStatus": "Approved"}, True),
        ({"Null": {"sagemaker:ModelApprovalStatus": "false"}}, {}, False),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner"]}}, {"aws:TagKeys": ["a", "owner"]},
         True),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["owner"]}}, {"aws:TagKeys": ["a"]}, False),
    ],
)  # fmt: skip
def test_conditions(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    policy = [allow("s3:ListBucket", "*", Condition=condition)]
    assert allowed(policy, "s3:ListBucket", "arn:aws:s3:::b", context) is expected


def test_policy_variables_come_from_the_request() -> None:
    policy = [
        allow(
            "sagemaker:DeleteSpace",
            "*",
            Condition={
                "ArnLike": {
                    "sagemaker:OwnerUserProfileArn": "arn:aws:sagemaker:*:*:user-profile/d-1/"
                    "${sagemaker:UserProfileName}"
                }
            },
        )
    ]
    mine = {
        "sagemaker:UserProfileName": "alice",
        "sagemaker:OwnerUserProfileArn": "arn:aws:sagemaker:us-east-1:1:user-profile/d-1/alice",
    }
    theirs = {**mine, "sagemaker:UserProfileName": "bob"}
    assert allowed(policy, "sagemaker:DeleteSpace", "arn:x", mine)
    assert not allowed(policy, "sagemaker:DeleteSpace", "arn:x", theirs)


def test_a_key_policy_must_allow_or_delegate_to_iam() -> None:
    identity = [allow("kms:Decrypt", "*")]
    delegating = {
        "Statement": [allow("kms:*", "*", Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})]
    }
    silent: dict[str, Any] = {"Statement": []}
    assert allowed(identity, "kms:Decrypt", "k", resource_policy=delegating, key_policy=True)
    assert not allowed(identity, "kms:Decrypt", "k", resource_policy=silent, key_policy=True)
    assert not allowed([], "kms:Decrypt", "k", resource_policy=delegating, key_policy=True)


def test_services_are_allowed_by_resource_policies_only() -> None:
    topic = {
        "Statement": [
            allow(
                "sns:Publish",
                "arn:t",
                Principal={"Service": "cloudwatch.amazonaws.com"},
                Condition={"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            )
        ]
    }
    cloudwatch = Principal(service="cloudwatch.amazonaws.com", account=ACCOUNT)
    context = {"aws:SourceAccount": ACCOUNT}
    assert allowed([], "sns:Publish", "arn:t", context, resource_policy=topic, principal=cloudwatch)
    assert not allowed([allow("*", "*")], "sns:Publish", "arn:t", context, principal=cloudwatch)


def test_unknown_operators_are_refused_not_ignored() -> None:
    policy = [allow("s3:GetObject", "*", Condition={"DateGreaterThan": {"aws:CurrentTime": "x"}})]
    with pytest.raises(UnsupportedPolicyError):
        allowed(policy, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:CurrentTime": "y"})


# -- defects the twin found in the synthesized policies ---------------------------------------


def test_failed_run_alarms_can_notify_the_encrypted_topic(workflow: Workflow) -> None:
    """enforce_ssl gives the topic a policy that replaces SNS's default: CloudWatch needs an
    explicit Allow to publish (and the key policy lets it use the key)."""
    assert workflow.iam.service_deliveries() == []
    (alarm,) = workflow.iam.policies.alarms
    assert ":alarm:" in alarm
    # Without the topic statement (the template before the fix), the alarm could not notify.
    stripped = IamTwin()
    stripped.policies = copy.deepcopy(workflow.iam.policies)
    for policy in stripped.policies.topic_policies.values():
        policy["Statement"] = [s for s in policy["Statement"] if s.get("Effect") == "Deny"]
    (denial,) = stripped.service_deliveries()
    assert denial.principal == "cloudwatch.amazonaws.com"
    assert denial.action == "sns:Publish"


def test_an_unknown_run_to_deploy_is_named_not_forbidden(workflow: Workflow) -> None:
    """GetObject of a missing key is AccessDenied (403), not NoSuchKey, unless the caller holds
    s3:ListBucket - with which condition context AWS does not say, so the twin offers none and
    the prefix-scoped grants do not turn it into a 404. The launch function lists the key."""
    launch = role_arn(workflow, "Workflow", "LaunchRun")
    with workflow.iam.acting_as(launch), pytest.raises(ClientError) as missing:
        workflow.client("s3").get_object(
            Bucket=workflow.platform.artifacts_bucket, Key="runs/no-such-run/run.json"
        )
    assert missing.value.response["Error"]["Code"] == "AccessDenied"

    result = workflow.run({"deploy_run": "no-such-run"})
    assert result.error == "RunRequestInvalid"
    assert "deploy_run: no run 'no-such-run' is recorded" in result.cause_json()["errorMessage"]


def role_arn(flow: Workflow, stack: str, prefix: str) -> str:
    intrinsics = flow.platform.intrinsics
    (role,) = [r for r in intrinsics.logical_ids(stack, "AWS::IAM::Role") if r.startswith(prefix)]
    return str(intrinsics.attribute[(stack, role, "Arn")])


def decide(flow: Workflow, role: str, action: str, resource: str, **context: Any) -> bool:
    twin = flow.iam
    denial = twin._decide(role, AccessRequest(action, resource, context), "test")
    if denial is not None:
        twin.denials.remove(denial)  # expected: not a failure of the fixture's assertion
    return denial is None


def test_the_twin_refuses_a_missing_grant(workflow: Workflow) -> None:
    """Sanity: a grant the policies do not hold is refused, naming principal and action."""
    smoke = role_arn(workflow, "Workflow", "SmokeTest")
    denial = workflow.iam._decide(
        smoke, AccessRequest("sagemaker:DeleteEndpoint", "arn:aws:sagemaker:x"), "test"
    )
    assert denial is not None
    assert "SmokeTestRole" in denial.principal
    assert denial.action == "sagemaker:DeleteEndpoint"
    workflow.iam.denials.remove(denial)


# -- the Studio role, tightened ---------------------------------------------------------------


@pytest.fixture
def studio(workflow: Workflow) -> str:
    return role_arn(workflow, "Studio", "ExecutionRole")


def package(flow: Workflow) -> str:
    group = flow.platform.model_package_group
    return f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{group}/3"


def test_studio_users_approve_but_never_rewrite_the_metadata_the_gate_reads(
    workflow: Workflow, studio: str
) -> None:
    update = "sagemaker:UpdateModelPackage"
    approve = {"sagemaker:ModelApprovalStatus": "Approved"}
    assert decide(workflow, studio, update, package(workflow), **approve)
    assert not decide(
        workflow,
        studio,
        update,
        package(workflow),
        **approve,
        **{"sagemaker:CustomerMetadataProperties/eval_loss": "0.01"},
    )
    assert not decide(
        workflow,
        studio,
        update,
        package(workflow),
        **{"sagemaker:CustomerMetadataProperties/x": "y"},
    )
    assert not decide(
        workflow,
        studio,
        update,
        package(workflow),
        **approve,
        **{"sagemaker:CustomerMetadataPropertiesToRemove": ["run_id"]},
    )


def test_studio_users_keep_pinned_dataset_versions_and_never_read_captured_prompts(
    workflow: Workflow, studio: str
) -> None:
    datasets = workflow.platform.datasets_bucket
    artifacts = workflow.platform.artifacts_bucket
    dataset = f"arn:aws:s3:::{datasets}/datasets/chat/train.jsonl"
    assert decide(workflow, studio, "s3:PutObject", dataset)
    assert decide(workflow, studio, "s3:DeleteObject", dataset)  # a delete marker only
    for action in (
        "s3:DeleteObjectVersion",
        "s3:PutObjectRetention",
        "s3:BypassGovernanceRetention",
    ):
        assert not decide(workflow, studio, action, dataset), action
    capture = f"arn:aws:s3:::{artifacts}/data-capture/llmft-local-chat/AllTraffic/x.jsonl"
    assert not decide(workflow, studio, "s3:GetObject", capture)
    assert decide(workflow, studio, "s3:GetObject", f"arn:aws:s3:::{artifacts}/runs/r/run.json")
    assert decide(workflow, studio, "s3:PutObject", f"arn:aws:s3:::{artifacts}/mlflow/1/a/x.png")


def test_studio_users_manage_only_their_own_private_spaces(workflow: Workflow, studio: str) -> None:
    (domain,) = workflow.platform.intrinsics.logical_ids("Studio", "AWS::SageMaker::Domain")
    domain_id = workflow.platform.intrinsics.resolve("Studio", {"Fn::GetAtt": [domain, "DomainId"]})
    space = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:space/{domain_id}/notebook"

    def owned_by(owner: str, caller: str, sharing: str = "Private") -> dict[str, Any]:
        return {
            "sagemaker:UserProfileName": caller,
            "sagemaker:OwnerUserProfileArn": (
                f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:user-profile/{domain_id}/{owner}"
            ),
            "sagemaker:SpaceSharingType": sharing,
        }

    assert decide(workflow, studio, "sagemaker:DeleteSpace", space, **owned_by("alice", "alice"))
    assert not decide(workflow, studio, "sagemaker:DeleteSpace", space, **owned_by("bob", "alice"))
    app = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:app/{domain_id}/notebook/JupyterLab/default"
    assert not decide(workflow, studio, "sagemaker:DeleteApp", app, **owned_by("bob", "alice"))
    assert decide(workflow, studio, "sagemaker:DeleteApp", app, **owned_by("alice", "alice"))


def test_every_principal_is_evaluated_while_runs_happen(workflow: Workflow) -> None:
    result = workflow.run(workflow.base_request(run_name="covered", deployment={"enabled": True}))
    assert result.status == "SUCCEEDED", result.cause
    workflow.iam.service_deliveries()
    covered = workflow.iam.coverage()
    for principal in (
        "WorkflowRole",
        "LaunchRunRole",
        "RecordRunRole",
        "SmokeTestRole",
        "TrainingJobRole",
        "ModelRole",
        "cloudwatch.amazonaws.com",
    ):
        assert any(principal in name for name in covered), principal
    actions = covered[next(p for p in covered if "TrainingJobRole" in p)]
    for needed in (
        "s3:GetObject",
        "s3:PutObject",
        "sagemaker:CallMlflowAppApi",
        "logs:PutLogEvents",
    ):
        assert needed in actions
    assert "events:PutTargets" in covered[next(p for p in covered if "WorkflowRole" in p)]


#: Grants the twin found missing in the templates as they were (issue 8): each was refused by
#: the evaluation before its fix.
MISSING_BEFORE = [
    # Endpoints log to /aws/sagemaker/Endpoints/<endpoint>, not to a group of that exact name.
    ("Workflow", "ModelRole", "logs:CreateLogStream",
     "arn:aws:logs:us-east-1:{account}:log-group:/aws/sagemaker/Endpoints/llmft-local-chat:"
     "log-stream:AllTraffic/i-1", {}),
    # The sagemaker-mlflow plugin writes artifacts to the App's store with the job's credentials.
    ("Workflow", "TrainingJobRole", "s3:PutObject",
     "arn:aws:s3:::{artifacts}/mlflow/1/run/artifacts/model/config.json", {}),
    ("Workflow", "TrainingJobRole", "sagemaker:CallMlflowAppApi", "{mlflow}", {}),
    # List* take no resource-level permissions: granted on ARNs they were never allowed.
    ("Studio", "ExecutionRole", "sagemaker:ListModelPackages", "*", {}),
    ("Studio", "ExecutionRole", "sagemaker:ListSpaces", "*", {}),
    # What the CLI calls from Studio.
    ("Studio", "ExecutionRole", "cloudformation:DescribeStacks",
     "arn:aws:cloudformation:us-east-1:{account}:stack/llmft-local-workflow/*", {}),
    ("Studio", "ExecutionRole", "lambda:GetFunctionConfiguration",
     "arn:aws:lambda:us-east-1:{account}:function:llmft-local-launch-run", {}),
    # The launch function tells a missing run record by listing its key as a prefix (a GetObject
    # 404 would need ListBucket with a context AWS does not document: runspec.objects).
    ("Workflow", "LaunchRun", "s3:ListBucket", "arn:aws:s3:::{artifacts}",
     {"s3:prefix": "runs/unknown/run.json"}),
    # The training job's output key: "the SageMaker execution role must include permissions to
    # call kms:Encrypt" (CreateTrainingJob OutputDataConfig.KmsKeyId).
    ("Workflow", "TrainingJobRole", "kms:Encrypt", "{key}",
     {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:CallerAccount": "{account}"}),
    # Publishing to the encrypted topic: SNS uses the key with the publisher's credentials.
    ("Workflow", "WorkflowRole", "kms:GenerateDataKey", "{key}",
     {"kms:ViaService": "sns.us-east-1.amazonaws.com", "kms:CallerAccount": "{account}"}),
]  # fmt: skip


@pytest.mark.parametrize(("stack", "role", "action", "resource", "context"), MISSING_BEFORE)
def test_grants_the_twin_found_missing(
    workflow: Workflow, stack: str, role: str, action: str, resource: str, context: dict[str, Any]
) -> None:
    (mlflow_app,) = workflow.platform.intrinsics.logical_ids(
        "Tracking", "AWS::SageMaker::MlflowApp"
    )
    (key,) = workflow.platform.intrinsics.logical_ids("Data", "AWS::KMS::Key")
    values = {
        "account": ACCOUNT,
        "artifacts": workflow.platform.artifacts_bucket,
        "mlflow": workflow.platform.intrinsics.attribute[("Tracking", mlflow_app, "Arn")],
        "key": workflow.platform.intrinsics.attribute[("Data", key, "Arn")],
    }
    principal = role_arn(workflow, stack, role)
    context = {name: str(value).format(**values) for name, value in context.items()}
    assert decide(workflow, principal, action, resource.format(**values), **context)
