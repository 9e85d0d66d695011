"""Stand the synthesized platform up inside moto: the resources the workflow touches, created
from the templates' own properties, and the state machine from its own definition.

Call ``deploy_platform`` inside ``mock_aws(config=MOTO_CONFIG)`` and ``patched_moto(...)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from finetune.local.cfn import Intrinsics
from finetune.local.event_patches import create_event_rules

__all__ = ["MOTO_CONFIG", "EmulatedPlatform", "deploy_platform"]

#: Real Step Functions execution; Lambda without Docker (the patches run handlers in-process).
MOTO_CONFIG: dict[str, Any] = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
    "core": {"reset_boto3_session": True},
}

# moto's Lambda validates runtimes against its own list, which may trail Lambda's.
_MOTO_RUNTIME_FALLBACK = "python3.12"


@dataclass
class EmulatedPlatform:
    """Handles to the emulated platform."""

    intrinsics: Intrinsics
    state_machine_arn: str
    datasets_bucket: str
    artifacts_bucket: str
    model_package_group: str
    topic_arn: str
    functions: dict[str, str]  # logical id -> function name
    launch_environment: dict[str, str]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1")

    @property
    def mlflow_app_arn(self) -> str | None:
        """The MLflow App's ARN, or None when the platform runs without MLflow."""
        apps = self.intrinsics.logical_ids("Tracking", "AWS::SageMaker::MlflowApp")
        if not apps:
            return None
        return str(self.intrinsics.attribute[("Tracking", apps[0], "Arn")])


def deploy_platform(
    templates: Mapping[str, dict[str, Any]],
    *,
    function_environment_overrides: Mapping[str, str] | None = None,
) -> EmulatedPlatform:
    """Create, in moto, everything the workflow stack's state machine and functions use.

    ``templates`` are the synthesized templates by stack id (Data, Network, Tracking, Studio,
    Workflow). ``function_environment_overrides`` replaces function settings that only make
    sense on AWS (e.g. ``FT_ENDPOINT_POLL_SECONDS``).
    """
    intrinsics = Intrinsics(templates)
    intrinsics.attribute_fallback = _placeholder_attribute
    _placeholder_refs(intrinsics)
    region = "us-east-1"
    s3 = boto3.client("s3", region_name=region)
    iam = boto3.client("iam", region_name=region)

    buckets = _create_buckets(intrinsics, s3)
    key = boto3.client("kms", region_name=region).create_key(Description="platform key (local)")
    for logical_id in intrinsics.logical_ids("Data", "AWS::KMS::Key"):
        intrinsics.physical[("Data", logical_id)] = key["KeyMetadata"]["KeyId"]
        intrinsics.attribute[("Data", logical_id, "Arn")] = key["KeyMetadata"]["Arn"]

    group = _create_model_package_group(intrinsics)
    for stack in templates:
        for logical_id in intrinsics.logical_ids(stack, "AWS::SageMaker::MlflowApp"):
            # Not emulated (the local backend tracks to SQLite), but its ARN is what the IAM
            # twin evaluates the MLflow calls of jobs and users against.
            digest = hashlib.sha256(f"{stack}/{logical_id}".encode()).hexdigest()[:12]
            intrinsics.attribute[(stack, logical_id, "Arn")] = (
                f"arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-{digest}"
            )
    for stack in templates:
        for logical_id in intrinsics.logical_ids(stack, "AWS::IAM::Role"):
            role = iam.create_role(
                RoleName=f"{stack}-{logical_id}"[:64],
                AssumeRolePolicyDocument=json.dumps(
                    templates[stack]["Resources"][logical_id]["Properties"][
                        "AssumeRolePolicyDocument"
                    ]
                ),
            )["Role"]
            intrinsics.physical[(stack, logical_id)] = role["RoleName"]
            intrinsics.attribute[(stack, logical_id, "Arn")] = role["Arn"]

    topic_arn = ""
    sns = boto3.client("sns", region_name=region)
    for logical_id in intrinsics.logical_ids("Workflow", "AWS::SNS::Topic"):
        name = intrinsics.properties("Workflow", logical_id).get("TopicName", logical_id)
        topic_arn = sns.create_topic(Name=name)["TopicArn"]
        intrinsics.physical[("Workflow", logical_id)] = topic_arn
        intrinsics.attribute[("Workflow", logical_id, "TopicName")] = name

    functions = _create_functions(intrinsics, dict(function_environment_overrides or {}))
    launch_environment = next(env for env in functions.values() if "FT_STATE_MACHINE_ARN" in env)
    _create_training_image(launch_environment["FT_CUSTOM_IMAGE_URI"])

    (machine_id,) = intrinsics.logical_ids("Workflow", "AWS::StepFunctions::StateMachine")
    properties = intrinsics.properties("Workflow", machine_id)
    definition = properties["DefinitionString"]
    state_machine_arn = boto3.client("stepfunctions", region_name=region).create_state_machine(
        name=properties["StateMachineName"],
        definition=definition,
        roleArn=properties["RoleArn"],
        type=properties.get("StateMachineType", "STANDARD"),
    )["stateMachineArn"]
    # E.g. Studio's approval rule: delivered to the state machine by finetune.local.event_patches.
    create_event_rules(intrinsics)

    return EmulatedPlatform(
        intrinsics=intrinsics,
        state_machine_arn=state_machine_arn,
        datasets_bucket=buckets["datasets"],
        artifacts_bucket=buckets["artifacts"],
        model_package_group=group,
        topic_arn=topic_arn,
        functions={logical: env["__name__"] for logical, env in functions.items()},
        launch_environment=launch_environment,
    )


def _placeholder_refs(intrinsics: Intrinsics) -> None:
    """Resources that are not emulated (VPC, subnets, security groups, ...) get stable fake ids:
    the workflow only passes them along (e.g. into VpcConfig)."""
    for stack, template in intrinsics.templates.items():
        for logical_id in template["Resources"]:
            digest = hashlib.sha256(f"{stack}/{logical_id}".encode()).hexdigest()[:17]
            intrinsics.physical.setdefault((stack, logical_id), f"local-{digest}")


def _placeholder_attribute(stack: str, logical_id: str, attribute: str) -> str:
    digest = hashlib.sha256(f"{stack}/{logical_id}/{attribute}".encode()).hexdigest()[:12]
    if attribute.endswith("Arn") or attribute == "Arn":
        return f"arn:aws:local:us-east-1:123456789012:{logical_id.lower()}/{digest}"
    return f"local-{digest}"


def _create_buckets(intrinsics: Intrinsics, s3: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for logical_id in intrinsics.logical_ids("Data", "AWS::S3::Bucket"):
        name = intrinsics.properties("Data", logical_id)["BucketName"]
        intrinsics.physical[("Data", logical_id)] = name
        intrinsics.attribute[("Data", logical_id, "Arn")] = f"arn:aws:s3:::{name}"
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        for purpose in ("datasets", "artifacts"):
            if f"-{purpose}-" in name:
                names[purpose] = name
    return names


def _create_model_package_group(intrinsics: Intrinsics) -> str:
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    (logical_id,) = intrinsics.logical_ids("Tracking", "AWS::SageMaker::ModelPackageGroup")
    name = intrinsics.properties("Tracking", logical_id)["ModelPackageGroupName"]
    arn = sagemaker.create_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupArn"]
    intrinsics.attribute[("Tracking", logical_id, "ModelPackageGroupArn")] = arn
    return str(name)


def _create_functions(
    intrinsics: Intrinsics, overrides: dict[str, str]
) -> dict[str, dict[str, str]]:
    client = boto3.client("lambda", region_name="us-east-1")
    created: dict[str, dict[str, str]] = {}
    for logical_id in intrinsics.logical_ids("Workflow", "AWS::Lambda::Function"):
        resource = intrinsics.templates["Workflow"]["Resources"][logical_id]["Properties"]
        environment = {
            key: str(value)
            for key, value in intrinsics.resolve(
                "Workflow", resource.get("Environment", {}).get("Variables", {})
            ).items()
        }
        environment.update({k: v for k, v in overrides.items() if k in environment})
        arguments = {
            "FunctionName": intrinsics.resolve(
                "Workflow", resource.get("FunctionName", logical_id)
            ),
            "Role": intrinsics.resolve("Workflow", resource["Role"]),
            "Handler": resource["Handler"],
            "Code": {"ZipFile": b"local: handlers run in-process"},
            "Timeout": int(resource.get("Timeout", 3)),
            "MemorySize": int(resource.get("MemorySize", 128)),
            "Environment": {"Variables": environment},
        }
        try:
            function = client.create_function(Runtime=resource["Runtime"], **arguments)
        except client.exceptions.ClientError:
            function = client.create_function(Runtime=_MOTO_RUNTIME_FALLBACK, **arguments)
        intrinsics.physical[("Workflow", logical_id)] = function["FunctionName"]
        intrinsics.attribute[("Workflow", logical_id, "Arn")] = function["FunctionArn"]
        created[logical_id] = {**environment, "__name__": function["FunctionName"]}
    return created


def _create_training_image(image_uri: str) -> None:
    """The platform image the launch function pins by digest (built by ``cdk deploy`` on AWS)."""
    ecr = boto3.client("ecr", region_name="us-east-1")
    repository_uri, _, tag = image_uri.rpartition(":")
    repository = repository_uri.split("/", 1)[1]
    ecr.create_repository(repositoryName=repository)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": f"sha256:{hashlib.sha256(tag.encode()).hexdigest()}"},
        "layers": [],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
