"""Train: the SageMaker training job (``.sync``), and the check that it really completed."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.steps import (
    CHECKPOINT_LOCAL_PATH,
    WorkflowResources,
    catch,
    sagemaker_step,
)

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["train"]


def train(
    scope: Construct,
    r: WorkflowResources,
    *,
    then: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    """Run the job, wait for it, and go on only if it ended ``Completed``.

    Security-relevant parameters (roles, KMS keys for output, VPC, inter-container encryption,
    metric definitions) are fixed here; the run document fills run-specific values only. The
    volume key is the exception that proves it: SageMaker refuses VolumeKmsKeyId on instance
    types with NVMe storage, so the launch function writes the ResourceConfig per instance type,
    with the platform key from its own settings.
    """
    environment: dict[str, Any] = {
        "FT_RUN_ID.$": "$.run.run_id",
        "FT_DATASET_IDENTITY.$": "$.run.training.dataset_identity",
        "FT_EVALUATION.$": "$.run.training.evaluation_config",
        "MLFLOW_EXPERIMENT_NAME.$": "$.run.experiment_name",
    }
    if r.mlflow_tracking_arn is not None:
        environment["MLFLOW_TRACKING_URI"] = r.mlflow_tracking_arn
    job = sagemaker_step(
        scope,
        "Train model",
        "createTrainingJob.sync",
        {
            "TrainingJobName.$": "$.run.training_job_name",
            "RoleArn": r.training_role_arn,
            "AlgorithmSpecification": {
                "TrainingImage.$": "$.run.training.image_uri",
                "TrainingInputMode": "File",
                "MetricDefinitions": [dict(d) for d in r.metric_definitions],
                "EnableSageMakerMetricsTimeSeries": True,
            },
            "HyperParameters.$": "$.run.training.hyperparameters",
            "InputDataConfig.$": "$.run.training.input_data_config",
            "OutputDataConfig": {
                "S3OutputPath.$": "$.run.training.output_path",
                "KmsKeyId": r.key_arn,
                # Uncompressed: the serving container reads the safetensors files directly.
                "CompressionType": "NONE",
            },
            "ResourceConfig.$": "$.run.training.resource_config",
            "VpcConfig": {
                "SecurityGroupIds": [r.security_group_id],
                "Subnets": list(r.subnet_ids),
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
            # Required in DescribeTrainingJob's response, whatever the status.
            "model_artifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        },
        # A retry after the job exists would fail on the duplicate name; only creation-time
        # throttling is worth one more attempt.
        retry_attempts=2,
    )
    catch(job, on_failure)
    not_completed = sfn.Pass(
        scope,
        "Training did not complete",
        comment="A Stopped job (spot wait expired, stopped by someone) has a partial model.",
        parameters={
            "Error": "TrainingNotCompleted",
            "Cause.$": "States.Format('training job {} ended {}; only a Completed job is "
            "registered', $.training.training_job_name, $.training.status)",
        },
        result_path="$.error",
    )
    not_completed.next(on_failure)
    completed = (
        sfn.Choice(
            scope,
            "Training completed?",
            comment="Whichever way .sync reports a Stopped job, nothing but Completed goes on.",
        )
        .when(Condition.string_equals("$.training.status", "Completed"), then)
        .otherwise(not_completed)
    )
    return job.next(completed)
