"""After training: record the result, apply the gate (decided by the record function), register
the model in the Model Registry."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.workflow.steps import (
    WorkflowResources,
    catch,
    lambda_step,
    notify_step,
    sagemaker_sdk_step,
)

Condition = sfn.Condition
JsonPath = sfn.JsonPath

__all__ = ["model_data_source", "record_and_gate", "register"]


def model_data_source() -> dict[str, Any]:
    """The trained (merged) model folder, uncompressed, as SageMaker places it in /opt/ml/model."""
    return {
        "S3DataSource": {
            "S3Uri.$": "$.training.model_artifacts",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }


def record_and_gate(
    scope: Construct,
    r: WorkflowResources,
    *,
    passed: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    """Record the job's metrics; the record function decides the gate once and the Choice
    follows its decision; a rejection is recorded and announced."""
    trained = lambda_step(
        scope,
        "Record training and evaluation",
        r.record_function,
        {"milestone": "trained", "run.$": "$.run", "training.$": "$.training"},
        result_path="$.recorded",
        comment="Read the job's final metrics, decide the gate, record both.",
    )
    catch(trained, on_failure)
    rejected = lambda_step(
        scope,
        "Record gate rejection",
        r.record_function,
        {"milestone": "rejected", "run.$": "$.run", "evaluation.$": "$.recorded.evaluation"},
        result_path="$.summary",
        comment="The model is not registered; record why.",
    )
    catch(rejected, on_failure)
    notify = notify_step(
        scope,
        "Notify gate rejection",
        r.topic,
        JsonPath.json_to_string(JsonPath.object_at("$.summary")),
        "Fine-tuning run rejected by its evaluation gate",
    )
    catch(notify, on_failure)
    rejected.next(notify).next(sfn.Succeed(scope, "Rejected by evaluation gate"))
    gate = (
        sfn.Choice(
            scope,
            "Passes evaluation gate?",
            comment="The record function's decision (runspec.run.GateDecision).",
        )
        .when(Condition.boolean_equals("$.recorded.evaluation.passed", True), passed)
        .otherwise(rejected)
    )
    return trained.next(gate)


def register(
    scope: Construct,
    r: WorkflowResources,
    *,
    then: sfn.IChainable,
    on_failure: sfn.IChainable,
) -> sfn.IChainable:
    package = sagemaker_sdk_step(
        scope,
        "Register model",
        "createModelPackage",
        {
            "ModelPackageGroupName.$": "$.run.registration.model_package_group",
            "ModelPackageDescription.$": "States.Format('Run {} fine-tuned from {}', "
            "$.run.run_id, $.run.base_model)",
            "ModelApprovalStatus.$": "$.run.registration.approval_status",
            # Idempotent retries: one token per training job. The API takes at most 36 of
            # [a-zA-Z0-9-]; job names reach 63, an MD5 in hex is 32.
            "ClientToken.$": "States.Hash($.run.training_job_name, 'MD5')",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": r.serving_image_uri,
                        "ModelDataSource": model_data_source(),
                        "Environment.$": "$.run.deployment.serving_environment",
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
            "SecurityConfig": {"KmsKeyId": r.key_arn},
            # No Tags: a versioned package takes its group's tags, and the API reference says
            # a request with ModelPackageGroupName "cannot supply a tag argument". The run id
            # is in CustomerMetadataProperties.
        },
        comment="Register the model in the Model Registry group with its metrics, lineage "
        "and the serving container; approval status from the platform config.",
        result_path="$.registration",
        result_selector={"model_package_arn.$": "$.ModelPackageArn"},
    )
    catch(package, on_failure)
    registered = lambda_step(
        scope,
        "Record registration",
        r.record_function,
        {
            "milestone": "registered",
            "run.$": "$.run",
            "model_package_arn.$": "$.registration.model_package_arn",
        },
        result_path=None,
        comment="Add the model package to the run's outputs.",
    )
    catch(registered, on_failure)
    return package.next(registered).next(then)
