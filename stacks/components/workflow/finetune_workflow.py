"""The fine-tuning state machine with its role, execution logs, tracing and failure alarm."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from runspec.attempts import MAX_BACKOFF_SECONDS, MAX_CAPACITY_RETRIES
from runspec.request import MAX_TRAINING_HOURS
from runspec.settings import PlatformSettings
from stacks.components.arns import PlatformArns
from stacks.components.encrypted_log_group import encrypted_log_group
from stacks.components.key_use import use_key_via
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.components.workflow.definition import WorkflowResources, build_definition
from stacks.nag import acknowledge_wildcard_resources

#: The longest training (and spot wait) launch accepts, for every attempt the most capacity
#: retries allow, with their backoffs (runspec.attempts); three endpoint waits (deployment, the
#: wait for an endpoint in transition before a rollback, the restore); a day for everything else
#: (recording, registration, retries). An execution timeout is caught by nothing - no record,
#: no notification - so a run launch accepted must never reach it. (A Standard workflow may run
#: for a year: this is about 170 days.)
_DEFAULTS = PlatformSettings.model_fields
_ENDPOINT_WAIT_SECONDS = (
    _DEFAULTS["endpoint_poll_seconds"].default * _DEFAULTS["endpoint_max_polls"].default
)
_TRAINING_SECONDS = (MAX_CAPACITY_RETRIES + 1) * MAX_TRAINING_HOURS * 3600 + (
    MAX_CAPACITY_RETRIES * MAX_BACKOFF_SECONDS
)
RUN_TIMEOUT = cdk.Duration.seconds(int(_TRAINING_SECONDS + 3 * _ENDPOINT_WAIT_SECONDS + 24 * 3600))


class FineTuneWorkflow(Construct):
    """A Standard state machine (``state_machine_name``) built by build_definition, with
    ALL-level execution logging (inputs/outputs included) to an encrypted log group, X-Ray
    tracing, a role scoped to the platform's jobs, models, endpoints, roles and functions, and an
    alarm that notifies the run topic when executions fail or time out.

    Props:
        state_machine_name: its name.
        arns: the platform's named resources (jobs, models, endpoints, packages) it may touch.
        resources: the functions, topic, roles and network the steps use.
        encryption_key / log_retention_days: for the execution log group.

    Attributes:
        state_machine: the state machine.
        role: its execution role.
        failure_alarm: the alarm on failed or timed-out executions.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        state_machine_name: str,
        arns: PlatformArns,
        resources: WorkflowResources,
        encryption_key: kms.IKey,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Runs the LLM fine-tuning workflow",
        )
        logs = encrypted_log_group(
            self,
            "ExecutionLogs",
            encryption_key=encryption_key,
            retention_days=log_retention_days,
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
        )
        definition = build_definition(self, resources)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            role=self.role,
            timeout=RUN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=logs, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="Fine-tune an LLM on SageMaker: validate, train, record, gate, register, "
            "deploy with smoke test and rollback, notify.",
        )
        self._grant_sagemaker(stack, arns, resources)
        # The SNS tasks grant sns:Publish; publishing to a KMS-encrypted topic also needs these.
        use_key_via(
            self.role,
            encryption_key,
            services=["sns"],
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            sid="PublishToEncryptedTopic",
        )

        failures = cloudwatch.MathExpression(
            expression="failed + timedout",
            using_metrics={
                "failed": self.state_machine.metric_failed(period=cdk.Duration.minutes(5)),
                "timedout": self.state_machine.metric_timed_out(period=cdk.Duration.minutes(5)),
            },
            label="Failed or timed-out runs",
            period=cdk.Duration.minutes(5),
        )
        self.failure_alarm = failures.create_alarm(
            self,
            "FailedRunsAlarm",
            alarm_description=f"A run of {state_machine_name} failed or timed out",
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.failure_alarm.add_alarm_action(cloudwatch_actions.SnsAction(resources.topic))

    def _grant_sagemaker(
        self, stack: cdk.Stack, arns: PlatformArns, resources: WorkflowResources
    ) -> None:
        training_jobs, models = arns.training_jobs, arns.models
        endpoint_configs, endpoints, packages = arns.endpoint_configs, arns.endpoints, arns.packages
        role = self.role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RunTrainingJobs",
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                ],
                resources=[training_jobs],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                # .sync waits on the EventBridge rule Step Functions manages for SageMaker jobs.
                sid="TrackTrainingJobCompletion",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    )
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RegisterModels",
                actions=["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"],
                resources=[arns.package_group, packages],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeployModels",
                actions=[
                    "sagemaker:CreateModel",
                    "sagemaker:DescribeModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DeleteEndpoint",
                ],
                resources=[models, endpoint_configs, endpoints],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TagRunResources",
                actions=["sagemaker:AddTags", "sagemaker:ListTags"],
                resources=[training_jobs, models, endpoint_configs, endpoints, packages],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PassSageMakerRoles",
                actions=["iam:PassRole"],
                resources=[resources.training_role_arn, resources.model_role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        acknowledge_wildcard_resources(
            role.policy,
            "Each run creates a training job, model, endpoint config (and possibly endpoint) "
            "named <prefix>-<run id>, and a numbered version in the platform's model package "
            "group; the grants cover exactly those names.",
            training_jobs,
            models,
            endpoint_configs,
            endpoints,
            packages,
        )
        acknowledge_wildcard_resources(
            role.policy,
            "Step Functions' Lambda integration grants each function and its versions/aliases "
            "(<arn>:*); the workflow invokes only the platform's three functions.",
            *(
                f"{fn.function_arn}:*"
                for fn in (
                    resources.launch_function,
                    resources.record_function,
                    resources.smoke_test_function,
                )
            ),
        )
        acknowledge_wildcard_resources(
            role.policy,
            "Step Functions execution logging (CloudWatch Logs delivery APIs) and X-Ray tracing "
            "require '*' resources; the log group itself is the workflow's own.",
            "*",
        )
