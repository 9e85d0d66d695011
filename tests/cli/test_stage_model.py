"""finetune stage-model: a pinned Hub snapshot copied into the datasets bucket under its commit.

The Hub is a tiny local model folder in huggingface_hub's own cache layout (the suite runs with
HF_HUB_OFFLINE=1), so huggingface_hub's snapshot_download resolves the revision as it does for
the Hub; the datasets bucket is moto's.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from finetune.cli import app
from finetune.errors import CliError
from finetune.stage_model import stage_model

HUB_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUCKET = "llmft-test-datasets"


def _safetensors(tensors: dict[str, list[float]]) -> bytes:
    """A safetensors file (8-byte header length, JSON header, little-endian F32 data)."""
    header: dict[str, Any] = {}
    data = b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.fixture
def hub_cache(tmp_path: Path) -> Path:
    """``HUB_ID`` at ``COMMIT`` (branch main) as huggingface_hub caches a download."""
    repo = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 2}))
    (snapshot / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    (snapshot / "model.safetensors").write_bytes(_safetensors({"w": [0.5, -0.25]}))
    return tmp_path / "hub"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def test_a_snapshot_is_staged_under_its_commit_once(hub_cache: Path, s3: Any) -> None:
    from huggingface_hub import snapshot_download

    download = functools.partial(snapshot_download, cache_dir=hub_cache)
    staged = stage_model(HUB_ID, None, s3=s3, bucket=BUCKET, download=download)

    prefix = f"base-models/hub/{HUB_ID}/{COMMIT}/"
    # The revision (the branch resolved to its commit) is in the path the run records.
    assert staged.uri == f"s3://{BUCKET}/{prefix}"
    assert staged.revision == COMMIT
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {
        prefix + name
        for name in ("config.json", "tokenizer.json", "model.safetensors", "finetune_source.json")
    }
    source = json.loads(
        s3.get_object(Bucket=BUCKET, Key=prefix + "finetune_source.json")["Body"].read()
    )
    assert source["hub_id"] == HUB_ID
    assert source["revision"] == COMMIT
    assert source["asked"] == "main"
    assert set(source["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}
    assert staged.uploaded == 3

    again = stage_model(HUB_ID, COMMIT, s3=s3, bucket=BUCKET, download=download)
    assert again.uri == staged.uri
    assert again.uploaded == 0  # the same content is not written twice


def test_what_cannot_be_staged_is_named(hub_cache: Path, s3: Any) -> None:
    from huggingface_hub import snapshot_download

    download = functools.partial(snapshot_download, cache_dir=hub_cache)
    with pytest.raises(CliError, match="not a Hub id"):
        stage_model("not-a-hub-id", None, s3=s3, bucket=BUCKET, download=download)
    with pytest.raises(CliError, match="cannot download it") as missing:
        stage_model("tiny-org/absent", None, s3=s3, bucket=BUCKET, download=download)
    assert "HF_TOKEN" in (missing.value.hint or "")
    weights = hub_cache / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT
    (weights / "model.safetensors").unlink()
    with pytest.raises(CliError, match="no safetensors weights"):
        stage_model(HUB_ID, None, s3=s3, bucket=BUCKET, download=download)


def test_the_command_is_part_of_the_cli() -> None:
    result = CliRunner().invoke(app, ["stage-model", "--help"])
    assert result.exit_code == 0
    assert "--revision" in result.output
