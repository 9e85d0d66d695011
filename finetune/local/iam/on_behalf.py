"""What AWS services do with a role the platform passes them, as authorization requests.

SageMaker runs a training job, and serves a model, with the execution role it was given: it
pulls the image, reads the channels (S3Prefix: it lists the prefix, then reads every object),
writes output, checkpoints and data capture, writes logs and metrics, places network interfaces
in the VPC, and the training code inside talks to the MLflow App. None of these calls go through
the platform's code, so the twin derives them from the request the platform made
(SageMaker Developer Guide, "SageMaker execution roles"; "Give SageMaker access to resources in
your VPC"; "Log Amazon SageMaker events"). A CloudWatch alarm publishes to its SNS topic as
``cloudwatch.amazonaws.com`` (SNS Developer Guide, encrypted topics and AWS event sources).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from finetune.local.iam.actions import Env, s3_object_requests
from finetune.local.iam.policy import AccessRequest

__all__ = ["S3Listing", "endpoint_requests", "training_job_requests"]

#: The objects under a bucket prefix (the twin lists the emulated bucket).
S3Listing = Callable[[str, str], Iterable[str]]

_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.[^/]+/(?P<repository>[^:@]+)"
)


def training_job_requests(
    env: Env,
    params: dict[str, Any],
    *,
    listing: S3Listing,
    vpc_arn: str | None,
    mlflow_artifact_store: str | None,
) -> list[AccessRequest]:
    """Everything the training job's role is asked for while the job runs."""
    job = params["TrainingJobName"]
    requests = _image_pull(env, params["AlgorithmSpecification"]["TrainingImage"])
    for channel in params.get("InputDataConfig", []):
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        requests += _read_prefix(env, uri, listing)
    source = (params.get("HyperParameters") or {}).get("sagemaker_submit_directory")
    if source:
        requests += _read_prefix(env, source, listing)
    output = params["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    output_key = params["OutputDataConfig"].get("KmsKeyId")
    if output_key:
        # API reference, OutputDataConfig.KmsKeyId: "the SageMaker execution role must include
        # permissions to call kms:Encrypt" (SageMaker encrypts the output through S3).
        requests.append(
            AccessRequest(
                "kms:Encrypt",
                output_key,
                {
                    "kms:ViaService": f"s3.{env.region}.amazonaws.com",
                    "kms:CallerAccount": env.account,
                },
            )
        )
    requests += _write(env, f"{output}/{job}/output/model/model.safetensors")
    requests += _write(env, f"{output}/{job}/output/data/evaluation.json")
    checkpoints = (params.get("CheckpointConfig") or {}).get("S3Uri")
    if checkpoints:
        requests += _read_prefix(env, checkpoints, listing)
        requests += _write(env, f"{checkpoints.rstrip('/')}/checkpoint-1/adapter_model.safetensors")
    requests += _logs(env, "/aws/sagemaker/TrainingJobs", f"{job}/algo-1-1700000000")
    requests += _metrics("/aws/sagemaker/TrainingJobs")
    requests += _network(env, params.get("VpcConfig"), vpc_arn)
    volume_key = (params.get("ResourceConfig") or {}).get("VolumeKmsKeyId")
    if volume_key:
        requests.append(
            AccessRequest(
                "kms:CreateGrant",
                volume_key,
                {
                    "kms:GrantIsForAWSResource": True,
                    "kms:ViaService": f"sagemaker.{env.region}.amazonaws.com",
                },
            )
        )
    tracking = (params.get("Environment") or {}).get("MLFLOW_TRACKING_URI", "")
    if ":mlflow-app/" in tracking:
        requests.append(AccessRequest("sagemaker:CallMlflowAppApi", tracking))
        if mlflow_artifact_store:
            # The sagemaker-mlflow plugin uploads artifacts with the caller's own credentials.
            store = mlflow_artifact_store.rstrip("/")
            requests += _write(env, f"{store}/1/run/artifacts/model/config.json")
            requests += _read_prefix(env, f"{store}/1/run/artifacts/", listing)
    return requests


def endpoint_requests(
    env: Env,
    endpoint_name: str,
    model: dict[str, Any],
    config: dict[str, Any],
    *,
    listing: S3Listing,
    vpc_arn: str | None,
) -> list[AccessRequest]:
    """Everything the model's role is asked for while the endpoint comes up and serves."""
    container = model.get("PrimaryContainer") or {}
    requests = _image_pull(env, container.get("Image", ""))
    source = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
    if source.get("S3Uri"):
        requests += _read_prefix(env, source["S3Uri"], listing)
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    requests += _logs(env, log_group, "AllTraffic/i-0123456789abcdef0")
    requests += _metrics("/aws/sagemaker/Endpoints")
    capture = config.get("DataCaptureConfig") or {}
    if capture.get("EnableCapture"):
        destination = capture["DestinationS3Uri"].rstrip("/")
        requests += _write(
            env, f"{destination}/{endpoint_name}/AllTraffic/2026/01/01/00/capture.jsonl"
        )
    requests += _network(env, model.get("VpcConfig"), vpc_arn)
    return requests


def _image_pull(env: Env, image: str) -> list[AccessRequest]:
    match = _ECR_IMAGE.match(image)
    if match is None:
        return []
    repository = (
        f"arn:{env.partition}:ecr:{match.group('region')}:{match.group('account')}:"
        f"repository/{match.group('repository')}"
    )
    return [
        AccessRequest("ecr:GetAuthorizationToken", "*"),
        *(
            AccessRequest(f"ecr:{action}", repository)
            for action in ("BatchCheckLayerAvailability", "BatchGetImage", "GetDownloadUrlForLayer")
        ),
    ]


def _read_prefix(env: Env, uri: str, listing: S3Listing) -> list[AccessRequest]:
    match = _S3_URI.match(uri)
    if match is None:
        return []
    bucket, key = match.group("bucket"), match.group("key")
    bucket_arn = f"arn:{env.partition}:s3:::{bucket}"
    requests = [AccessRequest("s3:ListBucket", bucket_arn, {"s3:prefix": key})]
    for found in listing(bucket, key):
        requests += s3_object_requests(env, "s3:GetObject", bucket, found, kms="Decrypt")
    return requests


def _write(env: Env, uri: str) -> list[AccessRequest]:
    match = _S3_URI.match(uri)
    assert match is not None, uri
    return s3_object_requests(
        env, "s3:PutObject", match.group("bucket"), match.group("key"), kms="GenerateDataKey"
    )


def _logs(env: Env, group: str, stream: str) -> list[AccessRequest]:
    base = f"arn:{env.partition}:logs:{env.region}:{env.account}:log-group:{group}"
    return [
        AccessRequest("logs:CreateLogGroup", f"{base}:log-stream:"),
        AccessRequest("logs:DescribeLogStreams", f"{base}:log-stream:"),
        AccessRequest("logs:CreateLogStream", f"{base}:log-stream:{stream}"),
        AccessRequest("logs:PutLogEvents", f"{base}:log-stream:{stream}"),
    ]


def _metrics(namespace: str) -> list[AccessRequest]:
    return [AccessRequest("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": namespace})]


def _network(
    env: Env, vpc_config: dict[str, Any] | None, vpc_arn: str | None
) -> list[AccessRequest]:
    if not vpc_config:
        return []
    prefix = f"arn:{env.partition}:ec2:{env.region}:{env.account}"
    context = {"ec2:Vpc": vpc_arn} if vpc_arn else {}
    requests = [
        AccessRequest(f"ec2:{action}", "*")
        for action in (
            "DescribeNetworkInterfaces",
            "DescribeVpcs",
            "DescribeDhcpOptions",
            "DescribeSubnets",
            "DescribeSecurityGroups",
        )
    ]
    requests.append(
        AccessRequest("ec2:CreateNetworkInterface", f"{prefix}:network-interface/*", context)
    )
    for subnet in vpc_config.get("Subnets", []):
        requests.append(
            AccessRequest("ec2:CreateNetworkInterface", f"{prefix}:subnet/{subnet}", context)
        )
    for group in vpc_config.get("SecurityGroupIds", []):
        requests.append(
            AccessRequest("ec2:CreateNetworkInterface", f"{prefix}:security-group/{group}", context)
        )
    for action in (
        "CreateNetworkInterfacePermission",
        "DeleteNetworkInterface",
        "DeleteNetworkInterfacePermission",
    ):
        requests.append(
            AccessRequest(f"ec2:{action}", f"{prefix}:network-interface/eni-0123", context)
        )
    return requests
