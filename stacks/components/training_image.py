"""The two ways a training job gets the training code: the platform's image, or script mode."""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from llm_sft.metrics import METRIC_DEFINITIONS
from stacks.components.huggingface_images import RegionalImage, huggingface_training_image

#: Never shipped: caches and editor droppings would change the asset hash without changing code.
EXCLUDED = ("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store")


class TrainingImage(Construct):
    """The training code as a container image and as a script-mode source bundle.

    - Custom image (default): ``training_code/Dockerfile`` built and pushed to ECR by
      ``cdk deploy`` (a DockerImageAsset: only staged at synth, never built there).
    - Script mode: the AWS Hugging Face PyTorch training image for the region, running
      ``train.py`` from this folder, shipped as a ``.tar.gz`` asset (the sagemaker-training
      toolkit only extracts tarballs).

    Props:
        source_dir: the training code folder (``training_code/``).

    Attributes:
        image: the DockerImageAsset; ``image_uri`` its URI (repository:tag).
        script_mode_image: the regional Hugging Face training image; ``script_mode_image_uri``.
        script_source: the source bundle asset; ``script_source_s3_uri`` its S3 URI.
        metric_definitions: SageMaker MetricDefinitions matching the code's METRIC lines.
    """

    def __init__(self, scope: Construct, construct_id: str, *, source_dir: Path) -> None:
        super().__init__(scope, construct_id)
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(source_dir),
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=list(EXCLUDED),
        )
        self.image_uri = self.image.image_uri
        self.script_mode_image: RegionalImage = huggingface_training_image()
        self.script_mode_image_uri = self.script_mode_image.uri(self)
        self.script_source = s3_assets.Asset(
            self, "ScriptSource", path=str(build_source_bundle(source_dir))
        )
        self.script_source_s3_uri = self.script_source.s3_object_url
        self.metric_definitions = [dict(d) for d in METRIC_DEFINITIONS]


def build_source_bundle(source_dir: Path) -> Path:
    """``source_dir`` as a reproducible ``sourcedir.tar.gz``: sorted entries, fixed times and
    owners, so the asset hash changes only when the code does."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(source_dir.rglob("*")):
            relative = path.relative_to(source_dir)
            if path.is_dir() or any(relative.match(p) or p in relative.parts for p in EXCLUDED):
                continue
            info = archive.gettarinfo(str(path), arcname=str(relative))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    out_dir = Path(tempfile.mkdtemp(prefix="training-source-"))
    bundle = out_dir / "sourcedir.tar.gz"
    with bundle.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(buffer.getvalue())
    return bundle
