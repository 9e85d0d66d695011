"""Approving a model in Studio's Model Registry deploys it through the platform's workflow.

SageMaker sends a "SageMaker Model Package State Change" event to the account's default
EventBridge bus whenever a package is created or its approval status changes ("Events that
Amazon SageMaker AI sends to Amazon EventBridge", SageMaker AI Developer Guide: the documented
``detail`` is the package's description: ModelPackageGroupName, ModelPackageArn,
ModelApprovalStatus, ...). A rule on the platform's group and ``Approved`` starts the state
machine with ``{"approved_package": "<package ARN>"}``.

Why the package and not the run id: the documented event detail does not include the package's
CustomerMetadataProperties (where the record function writes ``run_id``), so the launch function
reads the package, takes its ``run_id`` (a key nobody but the platform may write: the Studio
role's PackageMetadataGuard) and checks that the run's record names this very package. It then
deploys only when the run asked for deployment, and hands the deployment to the run's one deploy
execution (``finetune promote`` starts the same one), so that the several events SageMaker may
send for one change, and a promote, deploy once.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.nag import acknowledge

__all__ = ["APPROVAL_DETAIL_TYPE", "ApprovalDeploys"]

APPROVAL_DETAIL_TYPE = "SageMaker Model Package State Change"


class ApprovalDeploys(Construct):
    """An EventBridge rule: a package of ``package_group_name`` turned ``Approved`` -> a
    workflow execution with ``{"approved_package": <ModelPackageArn>}``.

    Props:
        rule_name: the rule's name (the role trusts EventBridge for this rule only).
        package_group_name: the platform's Model Package Group.
        state_machine_arn: the workflow (by ARN: it lives in the stateless stack, deployed
            after this one; the rule only needs its ARN).
        max_event_age: an approval not delivered within this time is dropped rather than
            deploying long after the click (default 2 hours; EventBridge retries with backoff).

    Attributes:
        rule: the rule; role: the role it starts executions with (states:StartExecution on
            the one state machine, nothing else); undelivered: where EventBridge puts an
            approval it could not deliver (SQS-managed encryption: EventBridge sends to it
            without a grant on the platform key; TLS only; kept 14 days).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        rule_name: str,
        package_group_name: str,
        state_machine_arn: str,
        max_event_age: cdk.Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        rule_arn = stack.format_arn(service="events", resource="rule", resource_name=rule_name)
        # Confused-deputy guard: EventBridge may assume the role for this account's rule only.
        self.role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("events.amazonaws.com").with_conditions(
                {
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": rule_arn},
                }
            ),
            description="EventBridge: start the fine-tuning workflow when a model is approved",
        )
        machine = sfn.StateMachine.from_state_machine_arn(self, "Workflow", state_machine_arn)
        self.undelivered = sqs.Queue(
            self,
            "Undelivered",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        acknowledge(
            self.undelivered,
            "This queue is itself the dead-letter queue of the approval rule's target: it "
            "holds approvals EventBridge could not deliver to the workflow, for inspection.",
            "AwsSolutions-SQS3",
            "Serverless-SQSRedrivePolicy",
        )
        self.rule = events.Rule(
            self,
            "Rule",
            rule_name=rule_name,
            description="A model package of the platform approved: deploy it if its run asked",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[APPROVAL_DETAIL_TYPE],
                detail={
                    "ModelPackageGroupName": [package_group_name],
                    "ModelApprovalStatus": ["Approved"],
                },
            ),
        )
        self.rule.add_target(
            targets.SfnStateMachine(
                machine,
                input=events.RuleTargetInput.from_object(
                    {"approved_package": events.EventField.from_path("$.detail.ModelPackageArn")}
                ),
                role=self.role,
                dead_letter_queue=self.undelivered,
                retry_attempts=20,
                max_event_age=max_event_age or cdk.Duration.hours(2),
            )
        )
