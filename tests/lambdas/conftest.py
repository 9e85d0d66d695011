"""Lambda logic against moto: a datasets bucket, an artifacts bucket, the training image."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from runspec.settings import PlatformSettings

REGION = "us-east-1"
ACCOUNT = "123456789012"
IMAGE_REPOSITORY = f"cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}"
IMAGE_TAG = "0123abcd" * 8


def make_settings(**changes: Any) -> PlatformSettings:
    values: dict[str, Any] = {
        "prefix": "llmft-test",
        "region": REGION,
        "datasets_bucket": "llmft-test-datasets",
        "artifacts_bucket": "llmft-test-artifacts",
        "state_machine_arn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:llmft-test-finetune",
        "custom_image_uri": (
            f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{IMAGE_REPOSITORY}:{IMAGE_TAG}"
        ),
        "script_mode_image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
        "huggingface-pytorch-training:2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04",
        "script_source_s3_uri": "s3://cdk-assets/abc.tar.gz",
        "default_training_instance_type": "ml.g5.2xlarge",
        "allowed_training_instance_types": ("ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.12xlarge"),
        "default_endpoint_instance_type": "ml.g5.xlarge",
        "model_package_group": "llmft-test-models",
        "model_approval_status": "PendingManualApproval",
        "internet_egress": True,
    }
    values.update(changes)
    return PlatformSettings(**values)


@dataclass
class Aws:
    settings: PlatformSettings

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def put(self, key: str, body: bytes | str, bucket: str | None = None) -> dict[str, Any]:
        data = body.encode() if isinstance(body, str) else body
        return dict(
            self.client("s3").put_object(
                Bucket=bucket or self.settings.datasets_bucket, Key=key, Body=data
            )
        )

    def put_jsonl(self, key: str, rows: list[dict[str, Any]]) -> str:
        self.put(key, "".join(json.dumps(r) + "\n" for r in rows))
        return f"s3://{self.settings.datasets_bucket}/{key}"


CHAT_ROW = {
    "messages": [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
}


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        settings = make_settings()
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (settings.datasets_bucket, settings.artifacts_bucket):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName=IMAGE_REPOSITORY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + hashlib.sha256(b"image").hexdigest()},
            "layers": [],
        }
        ecr.put_image(
            repositoryName=IMAGE_REPOSITORY, imageManifest=json.dumps(manifest), imageTag=IMAGE_TAG
        )
        sfn = boto3.client("stepfunctions", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        sfn.create_state_machine(
            name="llmft-test-finetune",
            roleArn=role,
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        )
        aws = Aws(settings)
        aws.put_jsonl("datasets/default/train.jsonl", [CHAT_ROW] * 3)
        yield aws
