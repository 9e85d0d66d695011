"""Regional URIs of the AWS Hugging Face Deep Learning Containers, resolved at synth offline.

The sagemaker SDK ships the image URI tables (``sagemaker.core.image_uris``); they give the tag
and, per region, the AWS account that hosts the repository. An environment-agnostic stack cannot
know its region at synth, so the accounts become a CloudFormation mapping looked up at deploy.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import aws_cdk as cdk
from constructs import Construct

from llm_sft.serving_contract import SERVING_STACK

#: Versions matched to training_code/: the training image runs script mode with the same major
#: transformers/PyTorch line; the serving image is the TGI (Hugging Face LLM) container that
#: loads the merged safetensors model the training job writes, in the version the serving
#: contract (llm_sft.serving_contract) was verified with.
TRAINING_FRAMEWORK = "huggingface"
TRAINING_VERSION = "5.3.0"
TRAINING_BASE_FRAMEWORK = "pytorch2.9.0"
TRAINING_PY_VERSION = "py312"
SERVING_FRAMEWORK = "huggingface-llm"
SERVING_VERSION = SERVING_STACK.server_version
#: A GPU type only selects the GPU variant of the tag; any g5 type gives the same URI.
_GPU_INSTANCE = "ml.g5.2xlarge"
_REFERENCE_REGION = "us-east-1"


@dataclass(frozen=True)
class RegionalImage:
    """An image hosted in a per-region AWS account:
    ``<account>.dkr.ecr.<region>.<suffix>/<repository>:<tag>``."""

    name: str
    repository_and_tag: str
    registries: dict[str, str]

    @property
    def repository(self) -> str:
        return self.repository_and_tag.split(":", 1)[0]

    def uri(self, scope: Construct) -> str:
        registry = f"{self.account(scope)}.dkr.ecr.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        return f"{registry}/{self.repository_and_tag}"

    def account(self, scope: Construct) -> str:
        stack = cdk.Stack.of(scope)
        if not cdk.Token.is_unresolved(stack.region):
            try:
                return self.registries[stack.region]
            except KeyError:
                raise ValueError(
                    f"{self.name} is not published in region {stack.region!r}"
                ) from None
        mapping_id = f"{self.name}Registries"
        mapping = stack.node.try_find_child(mapping_id)
        if mapping is None:
            mapping = cdk.CfnMapping(
                stack,
                mapping_id,
                mapping={region: {"account": acct} for region, acct in self.registries.items()},
            )
        assert isinstance(mapping, cdk.CfnMapping)
        return mapping.find_in_map(cdk.Aws.REGION, "account")

    def repository_arn(self, scope: Construct) -> str:
        return cdk.Stack.of(scope).format_arn(
            service="ecr",
            account=self.account(scope),
            resource="repository",
            resource_name=self.repository,
        )


@functools.cache
def huggingface_training_image() -> RegionalImage:
    return _regional_image(
        "HuggingFaceTraining",
        TRAINING_FRAMEWORK,
        TRAINING_VERSION,
        image_scope="training",
        base_framework_version=TRAINING_BASE_FRAMEWORK,
        py_version=TRAINING_PY_VERSION,
    )


@functools.cache
def huggingface_tgi_image() -> RegionalImage:
    return _regional_image("HuggingFaceTgi", SERVING_FRAMEWORK, SERVING_VERSION)


def _regional_image(
    name: str, framework: str, version: str, *, image_scope: str | None = None, **kwargs: str
) -> RegionalImage:
    from sagemaker.core import image_uris  # ~2 s import: only when a workflow stack is built

    reference = image_uris.retrieve(
        framework,
        region=_REFERENCE_REGION,
        version=version,
        instance_type=_GPU_INSTANCE,
        image_scope=image_scope,
        **kwargs,
    )
    repository_and_tag = reference.split("/", 1)[1]
    table = json.loads(
        resources.files("sagemaker.core.image_uri_config").joinpath(f"{framework}.json").read_text()
    )
    scoped = table.get(image_scope, table) if image_scope else table.get("inference", table)
    versions = scoped["versions"]
    entry = versions[scoped.get("version_aliases", {}).get(version, version)]
    if "registries" not in entry:  # training tables nest one level per base framework
        base = kwargs["base_framework_version"]
        entry = entry[entry.get("version_aliases", {}).get(base, base)]
    return RegionalImage(name, repository_and_tag, dict(entry["registries"]))
