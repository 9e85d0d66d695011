"""Studio from the first login: a JupyterLab lifecycle configuration that installs the platform's
``finetune`` CLI, pointed at this environment, and puts the walkthrough notebook in the user's
home.

Why a lifecycle configuration and not a custom image: a custom image is built from SageMaker
Distribution (10+ GB), pushed to ECR and attached per domain with an image, image version and
app image config, and every CLI change rebuilds it; users wait for that pipeline, not for their
app. The lifecycle configuration copies one small bundle (this repository's code, a CDK asset
named by its content: the version is pinned by the asset hash in the script) and installs it
without dependencies in seconds, only when the bundle changed. Offline accounts: the bundle comes
from the CDK assets bucket through the VPC's S3 gateway endpoint, the image already carries the
CLI's dependencies but typer, which comes from a package mirror when the account has one (the
script names what is missing in ~/.llmft/setup.log otherwise). Custom images stay the answer for
heavy, compiled dependencies; the CLI has none.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.components.project_function import EXCLUDED_FROM_ASSET

__all__ = ["BUNDLE_CONTENT", "StudioSetup", "lifecycle_script", "stage_studio_bundle"]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "studio" / "lifecycle" / "jupyterlab.sh"
#: What the bundle holds: the installable project (pyproject and its packages), the notebooks
#: and the examples they use.
BUNDLE_CONTENT = (
    "pyproject.toml",
    "stacks",
    "finetune",
    "lambdas",
    "training_code/llm_sft",
    "studio",
    "examples",
)
#: StudioLifecycleConfigContent: at most 16,384 characters, base64 (SageMaker API reference).
MAX_CONTENT = 16384


def stage_studio_bundle(repo: Path = REPO) -> Path:
    """The bundle's folder, assembled in a temporary folder (removed at exit, after synthesis
    copied it): only copies, so the same sources give the same asset hash."""
    folder = Path(tempfile.mkdtemp(prefix="llmft-studio-bundle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ignore = shutil.ignore_patterns(*EXCLUDED_FROM_ASSET, ".ipynb_checkpoints", "*.egg-info")
    for entry in BUNDLE_CONTENT:
        source, target = repo / entry, folder / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copyfile(source, target)
    return folder


def lifecycle_script(*, bundle_s3_uri: str, platform_env: str, prefix: str) -> str:
    """studio/lifecycle/jupyterlab.sh with this platform's values."""
    return (
        SCRIPT.read_text()
        .replace("@@BUNDLE_S3_URI@@", bundle_s3_uri)
        .replace("@@PLATFORM_ENV@@", platform_env)
        .replace("@@PLATFORM_PREFIX@@", prefix)
    )


class StudioSetup(Construct):
    """The bundle asset, the JupyterLab lifecycle configuration that installs it, and read access
    to the bundle for the Studio role.

    Props:
        name: the lifecycle configuration's name (unique in the account and region).
        platform_env: the environment the CLI addresses by default (``stacks/config.py``).
        prefix: the platform's resource name prefix (endpoint names in the notebook).
        studio_role: reads the bundle.

    Attributes:
        lifecycle_config / arn: the ``AWS::SageMaker::StudioLifecycleConfig`` and its ARN (the
            domain attaches it as JupyterLab's default).
        bundle: the S3 asset.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        platform_env: str,
        prefix: str,
        studio_role: iam.IRole,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bundle = s3_assets.Asset(self, "Bundle", path=str(stage_studio_bundle()))
        script = lifecycle_script(
            bundle_s3_uri=self.bundle.s3_object_url, platform_env=platform_env, prefix=prefix
        )
        self.lifecycle_config = sagemaker.CfnStudioLifecycleConfig(
            self,
            "JupyterLab",
            studio_lifecycle_config_name=name,
            studio_lifecycle_config_app_type="JupyterLab",
            studio_lifecycle_config_content=cdk.Fn.base64(script),
        )
        self.arn = self.lifecycle_config.attr_studio_lifecycle_config_arn
        # The one bundle object, not the CDK assets bucket.
        studio_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadStudioBundle",
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:s3:::{self.bundle.s3_bucket_name}/"
                    f"{self.bundle.s3_object_key}"
                ],
            )
        )
