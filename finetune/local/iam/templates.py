"""Read the policies the synthesized templates grant, resolved to the emulator's physical ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from finetune.local.cfn import Intrinsics

if TYPE_CHECKING:
    from finetune.local.iam.twin import _Policies

__all__ = ["read_policies"]


def read_policies(intrinsics: Intrinsics) -> _Policies:
    from finetune.local.iam.twin import _Policies

    found = _Policies()
    roles_by_name: dict[str, str] = {}
    for stack in intrinsics.templates:
        for logical_id in intrinsics.logical_ids(stack, "AWS::IAM::Role"):
            arn = str(intrinsics.attribute[(stack, logical_id, "Arn")])
            roles_by_name[str(intrinsics.physical[(stack, logical_id)])] = arn
            found.roles[arn] = [
                _resolved(intrinsics, stack, p["PolicyDocument"])
                for p in intrinsics.properties(stack, logical_id).get("Policies", [])
            ]
    for stack in intrinsics.templates:
        for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            for logical_id in intrinsics.logical_ids(stack, kind):
                properties = intrinsics.templates[stack]["Resources"][logical_id]["Properties"]
                document = _resolved(intrinsics, stack, properties["PolicyDocument"])
                for role in intrinsics.resolve(stack, properties.get("Roles", [])):
                    if str(role) in roles_by_name:
                        found.roles[roles_by_name[str(role)]].append(document)
        _resource_policies(intrinsics, stack, found)
    return found


def _resource_policies(intrinsics: Intrinsics, stack: str, found: _Policies) -> None:
    resources = intrinsics.templates[stack]["Resources"]
    for logical_id in intrinsics.logical_ids(stack, "AWS::S3::BucketPolicy"):
        properties = resources[logical_id]["Properties"]
        bucket = str(intrinsics.resolve(stack, properties["Bucket"]))
        found.bucket_policies[bucket] = _resolved(intrinsics, stack, properties["PolicyDocument"])
    for logical_id in intrinsics.logical_ids(stack, "AWS::S3::Bucket"):
        properties = intrinsics.properties(stack, logical_id)
        rules = (properties.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")
        for rule in rules or []:
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID"):
                found.bucket_keys[str(properties["BucketName"])] = str(default["KMSMasterKeyID"])
    for logical_id in intrinsics.logical_ids(stack, "AWS::SNS::TopicPolicy"):
        properties = resources[logical_id]["Properties"]
        document = _resolved(intrinsics, stack, properties["PolicyDocument"])
        for topic in intrinsics.resolve(stack, properties["Topics"]):
            found.topic_policies[str(topic)] = document
    for logical_id in intrinsics.logical_ids(stack, "AWS::SNS::Topic"):
        properties = intrinsics.properties(stack, logical_id)
        if properties.get("KmsMasterKeyId"):
            topic = str(intrinsics.physical[(stack, logical_id)])
            found.topic_keys[topic] = str(properties["KmsMasterKeyId"])
    for logical_id in intrinsics.logical_ids(stack, "AWS::KMS::Key"):
        arn = str(intrinsics.attribute[(stack, logical_id, "Arn")])
        found.key_policies[arn] = _resolved(
            intrinsics, stack, resources[logical_id]["Properties"]["KeyPolicy"]
        )
    for logical_id in intrinsics.logical_ids(stack, "AWS::CloudWatch::Alarm"):
        properties = intrinsics.properties(stack, logical_id)
        name = properties.get("AlarmName") or logical_id
        arn = f"arn:{found.partition}:cloudwatch:{found.region}:{found.account}:alarm:{name}"
        found.alarms[arn] = [str(a) for a in properties.get("AlarmActions", [])]
    for logical_id in intrinsics.logical_ids(stack, "AWS::EC2::VPC"):
        vpc = intrinsics.physical[(stack, logical_id)]
        found.vpc_arn = f"arn:{found.partition}:ec2:{found.region}:{found.account}:vpc/{vpc}"
    for logical_id in intrinsics.logical_ids(stack, "AWS::SageMaker::MlflowApp"):
        found.mlflow_artifact_store = str(
            intrinsics.properties(stack, logical_id)["ArtifactStoreUri"]
        )


def _resolved(intrinsics: Intrinsics, stack: str, document: Any) -> dict[str, Any]:
    return dict(intrinsics.resolve(stack, document))
