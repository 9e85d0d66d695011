"""``finetune stage-model <hub id> [--revision REV]``: a pinned Hub snapshot in the datasets bucket.

For accounts without internet egress (the ``prod`` configuration) and for gated Hub models: run
it where the Hub is reachable (a laptop, a Studio space of an account with egress) with your own
token (``HF_TOKEN``, as huggingface_hub reads it; never stored by the platform), and train on the
printed ``s3://`` folder. The snapshot is resolved to its commit (``--revision`` takes a branch,
tag or commit; default ``main``) and staged under ``base-models/hub/<hub id>/<commit>/``: the run
that trains on it records the revision in its ``base_model``. Only what a model needs is copied
(config, weights in safetensors, tokenizer, generation config), each file with its sha256; a
``finetune_source.json`` beside them says where they came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from finetune.cli_options import AwsFlag, JsonFlag, LocalFlag
from finetune.errors import EXIT_USAGE, CliError
from runspec.request import HUB_ID

__all__ = ["ALLOW_PATTERNS", "StagedModel", "stage_model", "stage_model_command"]

#: What the training code loads from a model folder (transformers' from_pretrained); PyTorch
#: pickles (*.bin) are left out: safetensors only.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]

SOURCE_FILE = "finetune_source.json"


@dataclass(frozen=True)
class StagedModel:
    hub_id: str
    revision: str
    uri: str
    files: dict[str, str]  # relative path -> sha256
    uploaded: int  # files written (the others were there with the same content)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hub_id": self.hub_id,
            "revision": self.revision,
            "base_model": self.uri,
            "files": self.files,
            "uploaded": self.uploaded,
        }


def stage_model(
    hub_id: str,
    revision: str | None,
    *,
    s3: Any,
    bucket: str,
    download: Callable[..., str] | None = None,
) -> StagedModel:
    """Download ``hub_id`` at ``revision`` (huggingface_hub's snapshot_download: its cache, the
    token from the environment) and copy it to ``bucket`` under its commit."""
    if not HUB_ID.match(hub_id):
        raise CliError(f"{hub_id!r} is not a Hub id like 'org/name'", exit_code=EXIT_USAGE)
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    try:
        folder = Path(
            download(repo_id=hub_id, revision=revision or "main", allow_patterns=ALLOW_PATTERNS)
        )
    except Exception as error:  # huggingface_hub's errors (gated, not found, offline) vary
        raise CliError(
            f"{hub_id}: cannot download it ({type(error).__name__}: {str(error)[:300]})",
            hint="a gated model needs HF_TOKEN with access granted on the Hub; "
            "an account without egress: run stage-model where the Hub is reachable",
            exit_code=EXIT_USAGE,
        ) from None
    # snapshot_download returns <cache>/models--org--name/snapshots/<commit>.
    commit = folder.name
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not any(p.name == "config.json" for p in files):
        raise CliError(f"{hub_id}@{commit}: no config.json: not a model", exit_code=EXIT_USAGE)
    if not any(p.suffix == ".safetensors" for p in files):
        raise CliError(
            f"{hub_id}@{commit}: no safetensors weights (only PyTorch pickles are not staged)",
            exit_code=EXIT_USAGE,
        )
    from finetune.datasets import file_sha256, upload_file

    prefix = f"base-models/hub/{hub_id}/{commit}/"
    digests: dict[str, str] = {}
    uploaded = 0
    for path in files:
        relative = path.relative_to(folder).as_posix()
        digests[relative] = file_sha256(path)
        written = upload_file(
            s3, bucket, prefix + relative, path, channel="model", sha256=digests[relative]
        )
        uploaded += not written.reused
    source = {"hub_id": hub_id, "revision": commit, "asked": revision or "main", "files": digests}
    s3.put_object(
        Bucket=bucket,
        Key=prefix + SOURCE_FILE,
        Body=json.dumps(source, indent=2, sort_keys=True).encode(),
        Metadata={
            "sha256": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
        },
    )
    return StagedModel(hub_id, commit, f"s3://{bucket}/{prefix}", digests, uploaded)


def stage_model_command(
    ctx: typer.Context,
    hub_id: Annotated[str, typer.Argument(help="Hugging Face Hub model id, e.g. Qwen/Qwen2.5-7B.")],
    revision: Annotated[
        str | None,
        typer.Option(help="Branch, tag or commit (default: main); pinned to its commit."),
    ] = None,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Copy a pinned Hub snapshot into the datasets bucket; print the base_model to use."""
    from finetune.cli import _backend, _run
    from finetune.data_commands import _bucket

    def action(options: Any) -> None:
        backend = _backend(options)
        with _bucket(backend) as (s3, bucket):
            staged = stage_model(hub_id, revision, s3=s3, bucket=bucket)
        if options.json:
            options.out.print_json(json.dumps(staged.to_dict()))
            return
        options.err.print(
            f"{hub_id}@{staged.revision}: {len(staged.files)} files staged "
            f"({staged.uploaded} uploaded, the others already there)",
            highlight=False,
        )
        options.out.print(f"base_model: {staged.uri}", highlight=False)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)
