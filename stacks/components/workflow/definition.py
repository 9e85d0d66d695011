"""The fine-tuning workflow as data: small functions, each building one step people can read.

State document as it grows (JSONPath):

- ``$.request`` / ``$.execution_name``: what was asked.
- ``$.run``: the resolved run (launch function): ids, pinned data and image, job parameters.
- ``$.training``: the finished training job (name, ARN, status, model artifacts).
- ``$.recorded``: metrics and gate inputs (record function).
- ``$.registration``: the model package.
- ``$.endpoint``: deployment progress (current/previous config, status, wait counter).
- ``$.error``: the failure being handled; ``$.summary``: what the notification says.

Security-relevant parameters (roles, KMS key, VPC, inter-container encryption, metric
definitions) are fixed in the definition; a run request can only fill run-specific values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.components.workflow import retries

JsonPath = sfn.JsonPath
Condition = sfn.Condition

SAGEMAKER = "arn:aws:states:::sagemaker"
SAGEMAKER_SDK = "arn:aws:states:::aws-sdk:sagemaker"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


@dataclass(frozen=True, kw_only=True)
class WorkflowResources:
    """What the workflow's steps call and pass along."""

    launch_function: lambda_.IFunction
    record_function: lambda_.IFunction
    smoke_test_function: lambda_.IFunction
    topic: sns.ITopic
    training_role_arn: str
    model_role_arn: str
    key_arn: str
    subnet_ids: Sequence[str]
    security_group_id: str
    metric_definitions: Sequence[Mapping[str, str]]
    serving_image_uri: str
    data_capture_s3_uri: str
    mlflow_tracking_arn: str | None


class FineTuneDefinition:
    """Builds the chain; ``build()`` returns the start state."""

    def __init__(self, scope: Construct, resources: WorkflowResources) -> None:
        self.scope = scope
        self.r = resources
        self._failure_handler: sfn.IChainable | None = None

    # -- building blocks ---------------------------------------------------------------------

    def _lambda(
        self,
        name: str,
        function: lambda_.IFunction,
        payload: Mapping[str, Any],
        *,
        result_path: str | None,
        comment: str,
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self.scope,
            name,
            lambda_function=function,
            payload=sfn.TaskInput.from_object(dict(payload)),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path if result_path is not None else JsonPath.DISCARD,
            comment=comment,
        )
        task.add_retry(**retries.lambda_retry())
        return task

    def _sagemaker(
        self,
        name: str,
        resource: str,
        parameters: Mapping[str, Any],
        *,
        comment: str,
        result_path: str | None = None,
        result_selector: Mapping[str, Any] | None = None,
        retry_attempts: int = 5,
    ) -> sfn.CustomState:
        state: dict[str, Any] = {
            "Type": "Task",
            "Comment": comment,
            "Resource": resource,
            "Parameters": dict(parameters),
            # JsonPath.DISCARD renders as an explicit null: keep the input, drop the result.
            "ResultPath": result_path if result_path is not None else JsonPath.DISCARD,
        }
        if result_selector is not None:
            state["ResultSelector"] = dict(result_selector)
        custom = sfn.CustomState(self.scope, name, state_json=state)
        custom.add_retry(**retries.sagemaker_retry(max_attempts=retry_attempts))
        return custom

    def _catch(self, state: sfn.TaskStateBase | sfn.CustomState) -> None:
        assert self._failure_handler is not None
        state.add_catch(self._failure_handler, errors=["States.ALL"], result_path="$.error")

    def _notify(self, name: str, message: str, subject: str) -> tasks.SnsPublish:
        task = tasks.SnsPublish(
            self.scope,
            name,
            topic=self.r.topic,
            message=sfn.TaskInput.from_text(message),
            subject=subject,
            result_path=JsonPath.DISCARD,
        )
        task.add_retry(**retries.sns_retry())
        return task

    # -- the workflow ------------------------------------------------------------------------

    def build(self) -> sfn.IChainable:
        self._failure_handler = self._failure_path()
        start = sfn.Pass(
            self.scope,
            "Receive run request",
            comment="Keep the execution input as $.request; {} means all defaults.",
            parameters={"request.$": "$", "execution_name.$": "$$.Execution.Name"},
        )
        launch = self._lambda(
            "Validate and resolve run",
            self.r.launch_function,
            {"request.$": "$.request", "execution_name.$": "$.execution_name"},
            result_path="$.run",
            comment="Fill defaults, check the request against the platform, pin dataset "
            "versions and the image digest, derive the run id.",
        )
        started = self._lambda(
            "Record run started",
            self.r.record_function,
            {"milestone": "started", "run.$": "$.run"},
            result_path=None,
            comment="Create the experiment, the run's trial and its run component.",
        )
        train = self._train()
        trained = self._lambda(
            "Record training and evaluation",
            self.r.record_function,
            {"milestone": "trained", "run.$": "$.run", "training.$": "$.training"},
            result_path="$.recorded",
            comment="Read the job's final metrics, record them and the gate inputs.",
        )
        for state in (launch, started, train, trained):
            self._catch(state)
        register, deploy = self._register_and_deploy()
        use_registered = sfn.Pass(
            self.scope,
            "Use the registered model",
            comment="Deploy an earlier run's Approved model package: no training.",
            parameters={"model_artifacts.$": "$.run.model_artifacts"},
            result_path="$.training",
        )
        use_registered.next(deploy)
        mode = (
            sfn.Choice(self.scope, "Train or deploy?")
            .when(Condition.string_equals("$.run.mode", "deploy"), use_registered)
            .otherwise(started)
        )
        started.next(train).next(trained).next(self._gate(register=register))
        return start.next(launch).next(mode)

    def _train(self) -> sfn.CustomState:
        environment: dict[str, Any] = {
            "FT_RUN_ID.$": "$.run.run_id",
            "FT_DATASET_IDENTITY.$": "$.run.training.dataset_identity",
            "MLFLOW_EXPERIMENT_NAME.$": "$.run.experiment_name",
        }
        if self.r.mlflow_tracking_arn is not None:
            environment["MLFLOW_TRACKING_URI"] = self.r.mlflow_tracking_arn
        train = self._sagemaker(
            "Train model",
            f"{SAGEMAKER}:createTrainingJob.sync",
            {
                "TrainingJobName.$": "$.run.training_job_name",
                "RoleArn": self.r.training_role_arn,
                "AlgorithmSpecification": {
                    "TrainingImage.$": "$.run.training.image_uri",
                    "TrainingInputMode": "File",
                    "MetricDefinitions": [dict(d) for d in self.r.metric_definitions],
                    "EnableSageMakerMetricsTimeSeries": True,
                },
                "HyperParameters.$": "$.run.training.hyperparameters",
                "InputDataConfig.$": "$.run.training.input_data_config",
                "OutputDataConfig": {
                    "S3OutputPath.$": "$.run.training.output_path",
                    "KmsKeyId": self.r.key_arn,
                    # Uncompressed: the serving container reads the safetensors files directly.
                    "CompressionType": "NONE",
                },
                "ResourceConfig": {
                    "InstanceType.$": "$.run.training.instance_type",
                    "InstanceCount.$": "$.run.training.instance_count",
                    "VolumeSizeInGB.$": "$.run.training.volume_size_gb",
                    "VolumeKmsKeyId": self.r.key_arn,
                },
                "VpcConfig": {
                    "SecurityGroupIds": [self.r.security_group_id],
                    "Subnets": list(self.r.subnet_ids),
                },
                "EnableInterContainerTrafficEncryption": True,
                "EnableManagedSpotTraining.$": "$.run.training.spot",
                "StoppingCondition.$": "$.run.training.stopping_condition",
                "CheckpointConfig": {
                    "S3Uri.$": "$.run.training.checkpoint_s3_uri",
                    "LocalPath": CHECKPOINT_LOCAL_PATH,
                },
                "Environment": environment,
                "ExperimentConfig": {
                    "ExperimentName.$": "$.run.experiment_name",
                    "TrialName.$": "$.run.trial_name",
                    "TrialComponentDisplayName": "training",
                },
                "Tags.$": "$.run.tags",
            },
            comment="Run the training job and wait for it (.sync): spot capacity, checkpoints "
            "and restarts are SageMaker's; a failed job fails this step with its reason.",
            result_path="$.training",
            result_selector={
                "training_job_name.$": "$.TrainingJobName",
                "training_job_arn.$": "$.TrainingJobArn",
                "status.$": "$.TrainingJobStatus",
                "model_artifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            # A retry after the job exists would fail on the duplicate name; only creation-time
            # throttling is worth one more attempt.
            retry_attempts=2,
        )
        return train

    def _gate(self, *, register: sfn.IChainable) -> sfn.Choice:
        evaluation = "$.recorded.evaluation"
        no_metric = Condition.not_(Condition.is_numeric(f"{evaluation}.value"))
        above_threshold = Condition.and_(
            Condition.is_numeric(f"{evaluation}.threshold"),
            Condition.number_greater_than_json_path(
                f"{evaluation}.value", f"{evaluation}.threshold"
            ),
        )
        not_better_than_best = Condition.and_(
            Condition.boolean_equals(f"{evaluation}.must_beat_best_approved", True),
            Condition.is_numeric(f"{evaluation}.best_approved_value"),
            Condition.number_greater_than_equals_json_path(
                f"{evaluation}.value", f"{evaluation}.best_approved_value"
            ),
        )
        rejected = self._lambda(
            "Record gate rejection",
            self.r.record_function,
            {
                "milestone": "rejected",
                "run.$": "$.run",
                "evaluation.$": "$.recorded.evaluation",
            },
            result_path="$.summary",
            comment="The model is not registered; record why.",
        )
        self._catch(rejected)
        notify = self._notify(
            "Notify gate rejection",
            JsonPath.json_to_string(JsonPath.object_at("$.summary")),
            "Fine-tuning run rejected by its evaluation gate",
        )
        self._catch(notify)
        rejected.next(notify).next(sfn.Succeed(self.scope, "Rejected by evaluation gate"))
        return (
            sfn.Choice(
                self.scope,
                "Passes evaluation gate?",
                comment="Lower is better: the metric must exist, be at most the threshold, and "
                "(when asked) beat the best approved model in the group.",
            )
            .when(no_metric, rejected, comment="no metric")
            .when(above_threshold, rejected, comment="above threshold")
            .when(not_better_than_best, rejected, comment="not better than the best approved")
            .otherwise(register)
        )

    def _register_and_deploy(self) -> tuple[sfn.IChainable, sfn.IChainable]:
        """The register-then-maybe-deploy chain, and the deploy chain's first state."""
        register = self._sagemaker(
            "Register model",
            f"{SAGEMAKER_SDK}:createModelPackage",
            {
                "ModelPackageGroupName.$": "$.run.registration.model_package_group",
                "ModelPackageDescription.$": "States.Format('Run {} fine-tuned from {}', "
                "$.run.run_id, $.run.base_model)",
                "ModelApprovalStatus.$": "$.run.registration.approval_status",
                "ClientToken.$": "$.run.training_job_name",
                "InferenceSpecification": {
                    "Containers": [
                        {
                            "Image": self.r.serving_image_uri,
                            "ModelDataSource": self._model_data_source(),
                            "Environment": self._serving_environment(),
                        }
                    ],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                    "SupportedRealtimeInferenceInstanceTypes.$": "States.Array("
                    "$.run.deployment.instance_type)",
                },
                "ModelMetrics": {
                    "ModelQuality": {
                        "Statistics": {
                            "ContentType": "application/json",
                            "S3Uri.$": "$.recorded.model_metrics_s3_uri",
                        }
                    }
                },
                "CustomerMetadataProperties.$": "$.recorded.package_metadata",
                "MetadataProperties": {"GeneratedBy.$": "$.training.training_job_arn"},
                "SecurityConfig": {"KmsKeyId": self.r.key_arn},
                "Tags.$": "$.run.tags",
            },
            comment="Register the model in the Model Registry group with its metrics, lineage "
            "and the serving container; approval status from the platform config.",
            result_path="$.registration",
            result_selector={"model_package_arn.$": "$.ModelPackageArn"},
        )
        registered = self._lambda(
            "Record registration",
            self.r.record_function,
            {
                "milestone": "registered",
                "run.$": "$.run",
                "model_package_arn.$": "$.registration.model_package_arn",
            },
            result_path=None,
            comment="Add the model package to the run's outputs.",
        )
        completed = self._lambda(
            "Record completion",
            self.r.record_function,
            {"milestone": "completed", "run.$": "$.run"},
            result_path="$.summary",
            comment="Close the run component; summarise the run.",
        )
        notify = self._notify(
            "Notify run succeeded",
            JsonPath.json_to_string(JsonPath.object_at("$.summary")),
            "Fine-tuning run succeeded",
        )
        for state in (register, registered, completed, notify):
            self._catch(state)
        completed.next(notify).next(sfn.Succeed(self.scope, "Run succeeded"))
        deploy_requested = Condition.and_(
            Condition.boolean_equals("$.run.deployment.enabled", True),
            Condition.boolean_equals("$.run.deployment.approved", True),
        )
        deploy = self._deploy(then=completed)
        should_deploy = (
            sfn.Choice(
                self.scope,
                "Deploy?",
                comment="Only when the request asks for it and the package is Approved.",
            )
            .when(deploy_requested, deploy)
            .otherwise(completed)
        )
        return register.next(registered).next(should_deploy), deploy

    def _model_data_source(self) -> dict[str, Any]:
        return {
            "S3DataSource": {
                "S3Uri.$": "$.training.model_artifacts",
                "S3DataType": "S3Prefix",
                "CompressionType": "None",
            }
        }

    @staticmethod
    def _serving_environment() -> dict[str, str]:
        # TGI reads the merged model that SageMaker places in /opt/ml/model.
        return {
            "HF_MODEL_ID": "/opt/ml/model",
            "MAX_INPUT_TOKENS": "2048",
            "MAX_TOTAL_TOKENS": "4096",
            "MESSAGES_API_ENABLED": "true",
        }

    def _deploy(self, *, then: sfn.IChainable) -> sfn.IChainable:
        deployment = "$.run.deployment"
        create_model = self._sagemaker(
            "Create model",
            f"{SAGEMAKER}:createModel",
            {
                "ModelName.$": f"{deployment}.model_name",
                "ExecutionRoleArn": self.r.model_role_arn,
                "PrimaryContainer": {
                    "Image": self.r.serving_image_uri,
                    "ModelDataSource": self._model_data_source(),
                    "Environment": {
                        **self._serving_environment(),
                        "SM_NUM_GPUS.$": f"{deployment}.gpus_per_instance",
                    },
                },
                "VpcConfig": {
                    "SecurityGroupIds": [self.r.security_group_id],
                    "Subnets": list(self.r.subnet_ids),
                },
                "EnableNetworkIsolation": True,
                "Tags.$": "$.run.tags",
            },
            comment="A SageMaker model: the TGI serving container with the merged model, "
            "network-isolated, in the platform VPC.",
        )
        create_config = self._sagemaker(
            "Create endpoint config",
            f"{SAGEMAKER}:createEndpointConfig",
            {
                "EndpointConfigName.$": f"{deployment}.endpoint_config_name",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName.$": f"{deployment}.model_name",
                        "InstanceType.$": f"{deployment}.instance_type",
                        "InitialInstanceCount.$": f"{deployment}.initial_instance_count",
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
                    "DestinationS3Uri": self.r.data_capture_s3_uri,
                    "KmsKeyId": self.r.key_arn,
                    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                },
                "Tags.$": "$.run.tags",
            },
            comment="One variant with the new model; requests and responses captured to S3.",
        )
        find_current = self._sagemaker(
            "Find current endpoint",
            f"{SAGEMAKER_SDK}:describeEndpoint",
            {"EndpointName.$": f"{deployment}.endpoint_name"},
            comment="Does the endpoint exist? Then it is updated and can be rolled back.",
            result_path="$.endpoint.current",
            result_selector={
                "config.$": "$.EndpointConfigName",
                "status.$": "$.EndpointStatus",
            },
            retry_attempts=3,
        )
        create_endpoint = self._sagemaker(
            "Create endpoint",
            f"{SAGEMAKER}:createEndpoint",
            {
                "EndpointName.$": f"{deployment}.endpoint_name",
                "EndpointConfigName.$": f"{deployment}.endpoint_config_name",
                "Tags.$": "$.run.tags",
            },
            comment="A new endpoint: on failure it is deleted again.",
        )
        update_endpoint = self._sagemaker(
            "Update endpoint",
            f"{SAGEMAKER}:updateEndpoint",
            {
                "EndpointName.$": f"{deployment}.endpoint_name",
                "EndpointConfigName.$": f"{deployment}.endpoint_config_name",
            },
            comment="Blue/green update of the serving endpoint to the new config.",
        )
        find_current.add_catch(
            create_endpoint, errors=["States.TaskFailed"], result_path="$.endpoint.lookup"
        )
        no_previous = sfn.Pass(
            self.scope,
            "Nothing to roll back to",
            result=sfn.Result.from_object({"previous_config": None}),
            result_path="$.endpoint.rollback",
        )
        keep_previous = sfn.Pass(
            self.scope,
            "Remember previous config",
            parameters={"previous_config.$": "$.endpoint.current.config"},
            result_path="$.endpoint.rollback",
        )
        not_updatable = sfn.Pass(
            self.scope,
            "Endpoint not updatable",
            parameters={
                "Error": "EndpointNotUpdatable",
                "Cause.$": "States.Format('endpoint {} is {}; wait for it or delete it', "
                f"{deployment}.endpoint_name, $.endpoint.current.status)",
            },
            result_path="$.error",
        )
        assert self._failure_handler is not None
        not_updatable.next(self._failure_handler)

        wait_loop = self._wait_and_verify(then=then)
        for state in (create_model, create_config, create_endpoint, update_endpoint):
            self._catch(state)
        find_current.add_catch(self._failure_handler, errors=["States.ALL"], result_path="$.error")
        create_endpoint.next(no_previous).next(wait_loop)
        update_endpoint.next(keep_previous).next(wait_loop)
        endpoint_ready_for_update = (
            sfn.Choice(self.scope, "Endpoint ready for update?")
            .when(
                Condition.string_equals("$.endpoint.current.status", "InService"), update_endpoint
            )
            .otherwise(not_updatable)
        )
        return create_model.next(create_config).next(find_current).next(endpoint_ready_for_update)

    def _wait_and_verify(self, *, then: sfn.IChainable) -> sfn.IChainable:
        deployment = "$.run.deployment"
        rollback = self._rollback()
        start_counter = sfn.Pass(
            self.scope,
            "Start wait counter",
            result=sfn.Result.from_number(0),
            result_path="$.endpoint.polls",
        )
        wait = sfn.Wait(
            self.scope,
            "Wait for endpoint",
            time=sfn.WaitTime.seconds_path(f"{deployment}.poll_seconds"),
        )
        check = self._sagemaker(
            "Check endpoint status",
            f"{SAGEMAKER_SDK}:describeEndpoint",
            {"EndpointName.$": f"{deployment}.endpoint_name"},
            comment="Poll the endpoint (bounded by the wait counter).",
            result_path="$.endpoint.status",
            result_selector={
                "EndpointStatus.$": "$.EndpointStatus",
                "EndpointConfigName.$": "$.EndpointConfigName",
            },
            retry_attempts=3,
        )
        self._catch(check)
        count = sfn.Pass(
            self.scope,
            "Count wait",
            parameters={"value.$": "States.MathAdd($.endpoint.polls, 1)"},
            result_path="$.endpoint.counter",
        )
        store_count = sfn.Pass(
            self.scope,
            "Store wait count",
            input_path="$.endpoint.counter.value",
            result_path="$.endpoint.polls",
        )
        endpoint_failed = sfn.Pass(
            self.scope,
            "Endpoint failed",
            parameters={
                "Error": "EndpointFailed",
                "Cause.$": "States.Format('endpoint {} failed on config {}; DescribeEndpoint "
                "shows the FailureReason', "
                f"{deployment}.endpoint_name, {deployment}.endpoint_config_name)",
            },
            result_path="$.error",
        )
        timed_out = sfn.Pass(
            self.scope,
            "Endpoint wait timed out",
            parameters={
                "Error": "EndpointWaitTimedOut",
                "Cause.$": "States.Format('endpoint {} not in service after {} checks', "
                f"{deployment}.endpoint_name, $.endpoint.polls)",
            },
            result_path="$.error",
        )
        rolled_back_by_sagemaker = sfn.Pass(
            self.scope,
            "Update rolled back by SageMaker",
            parameters={
                "Error": "EndpointUpdateFailed",
                "Cause.$": "States.Format('endpoint {} did not take config {} and still serves "
                "{}', "
                f"{deployment}.endpoint_name, {deployment}.endpoint_config_name, "
                "$.endpoint.status.EndpointConfigName)",
            },
            result_path="$.error",
        )
        assert self._failure_handler is not None
        rolled_back_by_sagemaker.next(self._failure_handler)
        endpoint_failed.next(rollback)
        timed_out.next(rollback)

        smoke = self._lambda(
            "Smoke test endpoint",
            self.r.smoke_test_function,
            {"endpoint_name.$": f"{deployment}.endpoint_name"},
            result_path="$.smoke",
            comment="One generation request; a wrong or missing answer rolls the endpoint back.",
        )
        smoke.add_catch(rollback, errors=["States.ALL"], result_path="$.error")
        deployed = self._lambda(
            "Record deployment",
            self.r.record_function,
            {
                "milestone": "deployed",
                "run.$": "$.run",
                "endpoint_name.$": f"{deployment}.endpoint_name",
                "smoke_test.$": "$.smoke",
            },
            result_path=None,
            comment="Add the endpoint to the run's outputs.",
        )
        self._catch(deployed)
        smoke.next(deployed).next(then)

        in_service_with_new_config = Condition.and_(
            Condition.string_equals("$.endpoint.status.EndpointStatus", "InService"),
            Condition.string_equals_json_path(
                "$.endpoint.status.EndpointConfigName", f"{deployment}.endpoint_config_name"
            ),
        )
        status = (
            sfn.Choice(self.scope, "Endpoint in service?")
            .when(in_service_with_new_config, smoke)
            .when(
                Condition.string_equals("$.endpoint.status.EndpointStatus", "InService"),
                rolled_back_by_sagemaker,
                comment="in service, but still on the previous config",
            )
            .when(
                Condition.string_equals("$.endpoint.status.EndpointStatus", "Failed"),
                endpoint_failed,
            )
            .otherwise(count)
        )
        waited_too_long = (
            sfn.Choice(self.scope, "Waited too long?")
            .when(
                Condition.number_greater_than_equals_json_path(
                    "$.endpoint.polls", f"{deployment}.max_polls"
                ),
                timed_out,
            )
            .otherwise(wait)
        )
        count.next(store_count).next(waited_too_long)
        start_counter.next(wait).next(check).next(status)
        return start_counter

    def _rollback(self) -> sfn.IChainable:
        deployment = "$.run.deployment"
        restore = self._sagemaker(
            "Restore previous endpoint config",
            f"{SAGEMAKER}:updateEndpoint",
            {
                "EndpointName.$": f"{deployment}.endpoint_name",
                "EndpointConfigName.$": "$.endpoint.rollback.previous_config",
            },
            comment="Put the endpoint back on the config that served before this run.",
        )
        delete = self._sagemaker(
            "Delete failed endpoint",
            f"{SAGEMAKER_SDK}:deleteEndpoint",
            {"EndpointName.$": f"{deployment}.endpoint_name"},
            comment="A new endpoint that never served: remove it so it costs nothing.",
        )
        assert self._failure_handler is not None
        for state in (restore, delete):
            state.add_catch(
                self._failure_handler, errors=["States.ALL"], result_path="$.rollback_error"
            )
            state.next(self._failure_handler)
        return (
            sfn.Choice(self.scope, "Previous config to restore?")
            .when(Condition.is_string("$.endpoint.rollback.previous_config"), restore)
            .otherwise(delete)
        )

    def _failure_path(self) -> sfn.IChainable:
        # A Fail state may not raise the reserved "States.*" names (e.g. States.TaskFailed from a
        # failed training job); those end as RunFailed with the original name in the cause.
        failed = (
            sfn.Choice(self.scope, "Reserved error name?")
            .when(
                Condition.string_matches("$.error.Error", "States.*"),
                sfn.Fail(
                    self.scope,
                    "Run failed in a step",
                    error="RunFailed",
                    cause_path=JsonPath.format(
                        "{}: {}",
                        JsonPath.string_at("$.error.Error"),
                        JsonPath.string_at("$.error.Cause"),
                    ),
                ),
            )
            .otherwise(
                sfn.Fail(
                    self.scope, "Run failed", error_path="$.error.Error", cause_path="$.error.Cause"
                )
            )
        )
        notify = self._notify(
            "Notify run failed",
            JsonPath.format(
                "Fine-tuning run {} failed. {}: {}",
                JsonPath.string_at("$$.Execution.Name"),
                JsonPath.string_at("$.error.Error"),
                JsonPath.string_at("$.error.Cause"),
            ),
            "Fine-tuning run failed",
        )
        notify.add_catch(failed, errors=["States.ALL"], result_path="$.notify_error")
        notify.next(failed)
        record_failure = self._lambda(
            "Record failure",
            self.r.record_function,
            {"milestone": "failed", "run.$": "$.run", "error.$": "$.error"},
            result_path="$.summary",
            comment="Mark the run failed with its cause.",
        )
        record_invalid = self._lambda(
            "Record invalid request",
            self.r.record_function,
            {
                "milestone": "failed",
                "run": None,
                "execution_name.$": "$$.Execution.Name",
                "error.$": "$.error",
            },
            result_path="$.summary",
            comment="The request never became a run: keep the failure by execution name.",
        )
        for state in (record_failure, record_invalid):
            state.add_catch(notify, errors=["States.ALL"], result_path="$.record_error")
            state.next(notify)
        return (
            sfn.Choice(self.scope, "Run resolved?")
            .when(Condition.is_present("$.run"), record_failure)
            .otherwise(record_invalid)
        )
