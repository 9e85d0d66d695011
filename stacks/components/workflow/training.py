"""Train: the SageMaker training job (``.sync``), and the check that it really completed.

A job that fails for want of capacity (runspec.attempts: a CapacityError, a spot wait that
expired) is tried again as the run's next attempt, ``<stem>-a<N+1>``, after a backoff, at most
``$.run.training.capacity_retry.max_retries`` times per execution: every attempt resumes from the
run's one checkpoint location, so nothing trained is lost. Any other failure ends the run.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from runspec.attempts import CAPACITY_SECONDARY_STATUSES, cause_patterns
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
            "TrainingJobName.$": "$.run.attempt.training_job_name",
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
            "secondary_status.$": "$.SecondaryStatus",
            # Required in DescribeTrainingJob's response, whatever the status.
            "model_artifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        },
        # A retry after the job exists would fail on the duplicate name; only creation-time
        # throttling is worth one more attempt.
        retry_attempts=2,
    )
    capacity_retry = _capacity_retry(scope, retry=job, on_failure=on_failure)
    # A failed job fails the .sync task with States.TaskFailed and the job's description as
    # the cause: capacity failures are told apart there; every other error ends the run.
    job.add_catch(
        _capacity_failure(scope, capacity_retry, on_failure),
        errors=["States.TaskFailed"],
        result_path="$.error",
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
        .when(_any_of("$.training.secondary_status", CAPACITY_SECONDARY_STATUSES), capacity_retry)
        .otherwise(not_completed)
    )
    return job.next(completed)


def _any_of(path: str, values: tuple[str, ...]) -> sfn.Condition:
    conditions = [Condition.string_equals(path, value) for value in values]
    return conditions[0] if len(conditions) == 1 else Condition.or_(*conditions)


def _capacity_failure(
    scope: Construct, capacity_retry: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    """Whether a failed training task's cause (the job's DescribeTrainingJob JSON) is a
    capacity failure: matched on the field, never parsed (a cause that is not JSON must not
    fail the execution in an intrinsic function, which nothing could catch)."""
    capacity = Condition.or_(
        *(Condition.string_matches("$.error.Cause", pattern) for pattern in cause_patterns())
    )
    return (
        sfn.Choice(
            scope,
            "Capacity failure?",
            comment="CapacityError / InsufficientCapacityError, or a spot wait that expired "
            "(MaxWaitTimeExceeded): capacity may come back; nothing else is retried.",
        )
        .when(Condition.not_(Condition.is_present("$.error.Cause")), on_failure)
        .when(capacity, capacity_retry)
        .otherwise(on_failure)
    )


def _capacity_retry(
    scope: Construct, *, retry: sfn.IChainable, on_failure: sfn.IChainable
) -> sfn.IChainable:
    """Another attempt while the execution has capacity retries left, after its backoff; else
    the run fails saying so (its checkpoints stay: ``finetune retry`` resumes from them)."""
    next_attempt = sfn.Pass(
        scope,
        "Next training attempt",
        comment="Attempt N+1 trains as <stem>-a<N+1> (SageMaker never reuses a job name) from "
        "the run's checkpoints.",
        parameters={
            "number.$": "States.MathAdd($.run.attempt.number, 1)",
            "training_job_name.$": "States.Format('{}-a{}', $.run.attempt.stem, "
            "States.MathAdd($.run.attempt.number, 1))",
            "stem.$": "$.run.attempt.stem",
            "capacity_retries.$": "States.MathAdd($.run.attempt.capacity_retries, 1)",
            "backoff_seconds.$": "States.ArrayGetItem("
            "$.run.training.capacity_retry.backoff_seconds, $.run.attempt.capacity_retries)",
        },
        result_path="$.run.attempt",
    )
    back_off = sfn.Wait(
        scope,
        "Back off before the next attempt",
        time=sfn.WaitTime.seconds_path("$.run.attempt.backoff_seconds"),
    )
    exhausted = sfn.Pass(
        scope,
        "Capacity retries exhausted",
        parameters={
            "Error": "TrainingCapacityUnavailable",
            "Cause.$": "States.Format('training job {} (attempt {}) found no capacity, and the "
            "run has retried {} times; its checkpoints are kept: retry the run when capacity "
            "returns (finetune retry {})', $.run.attempt.training_job_name, "
            "$.run.attempt.number, $.run.attempt.capacity_retries, $.run.run_id)",
        },
        result_path="$.error",
    )
    exhausted.next(on_failure)
    next_attempt.next(back_off).next(retry)
    return (
        sfn.Choice(scope, "Capacity retry left?")
        .when(
            Condition.number_less_than_json_path(
                "$.run.attempt.capacity_retries", "$.run.training.capacity_retry.max_retries"
            ),
            next_attempt,
        )
        .otherwise(exhausted)
    )
