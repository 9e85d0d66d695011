"""Data from this machine into the platform: checked with the training code's own rules
(``llm_sft.datacheck``), then uploaded to the datasets bucket under keys that name their content.

- ``check_channels``: what ``finetune data check`` and ``upload`` report (per file: format, rows,
  errors with file and line, warnings; with a tokenizer, token counts against max_seq_length).
- ``upload_file``: one file to ``datasets/<name>/<sha256[:16]>/<file name>``, with its sha256 as
  object metadata; the same content is uploaded once (the existing version is reused).
- ``load_launch_file`` / ``stage_local_inputs``: the local backend takes local paths in a run
  request (``dataset.train`` / ``.validation`` files, a ``base_model`` folder). The run file is
  validated with each path replaced by the ``s3://`` URI it is staged at in the emulated datasets
  bucket (the request schema stays ``s3://`` only); the backend uploads them when the run starts.
  Relative paths are relative to the run file's folder.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.backends.common import elide
from finetune.errors import EXIT_USAGE, CliError
from llm_sft.datacheck import FileReport, JsonlCheck, RowIndex, TokenStats, file_warnings
from runspec.request import RunRequestError, is_deploy_request, parse_run_request

__all__ = [
    "CheckResult",
    "LocalInput",
    "UploadedObject",
    "check_channels",
    "dataset_block",
    "dataset_key",
    "load_launch_file",
    "local_datasets_bucket",
    "local_paths_for",
    "stage_local_inputs",
    "upload_file",
]

MIB = 1024 * 1024
_CHUNK = MIB
#: Files up to this size are uploaded with one PutObject; larger ones in parts of this size.
PART_BYTES = 16 * MIB
#: ``--name``: a folder name under datasets/.
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
#: Where local paths of a run request are staged in the emulated datasets bucket.
STAGED_DATASETS = "local"
STAGED_MODELS = "base-models/local"

#: Progress callback: (description, bytes done, bytes total).
Progress = Callable[[str, int, int], None]


def _no_progress(_what: str, _done: int, _total: int) -> None:
    return None


# -- checking ---------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """Reports of the files of each channel; token counts per channel with a tokenizer."""

    files: dict[str, list[FileReport]] = field(default_factory=dict)
    tokens: dict[str, TokenStats] = field(default_factory=dict)
    tokenizer: str | None = None

    @property
    def ok(self) -> bool:
        return all(report.ok for reports in self.files.values() for report in reports)

    @property
    def error_count(self) -> int:
        return sum(r.error_count for reports in self.files.values() for r in reports)

    def warnings(self) -> list[str]:
        """One line per kind of warning of each file (count and first row)."""
        reports = [report for reports in self.files.values() for report in reports]
        return [warning for report in reports for warning in file_warnings(report)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error_count": self.error_count,
            "channels": {
                name: [report.to_dict() for report in reports]
                for name, reports in self.files.items()
            },
            "file_warnings": [
                w for rs in self.files.values() for r in rs for w in file_warnings(r)
            ],
            "tokenizer": self.tokenizer,
            "tokens": {name: stats.to_dict() for name, stats in self.tokens.items()},
        }


def channel_paths(name: str, path: Path) -> list[Path]:
    """The files of a channel given as a file or a folder, as the training job reads them."""
    from llm_sft.data import channel_files
    from llm_sft.errors import DataError

    if path.is_file():
        return [path]
    try:
        return channel_files(name, path)
    except DataError as error:
        raise CliError(str(error), exit_code=EXIT_USAGE) from None


def check_channels(
    channels: dict[str, Path],
    *,
    tokenizer: Any = None,
    tokenizer_name: str | None = None,
    max_seq_length: int = 1024,
    progress: Progress = _no_progress,
) -> CheckResult:
    """Check every file of each channel (``train`` first: validation rows are compared with its
    rows), streaming; with a tokenizer, count tokens as the training job encodes them."""
    from llm_sft.data import measure_tokens

    result = CheckResult(tokenizer=tokenizer_name)
    train_index: RowIndex | None = None
    for name in sorted(channels, key=lambda channel: (channel != "train", channel)):
        index = RowIndex()
        stats = TokenStats(max_seq_length=max_seq_length) if tokenizer is not None else None

        def count(example: Any, stats: TokenStats | None = stats) -> None:
            if stats is not None:
                stats.add(*measure_tokens(tokenizer, example, max_seq_length))

        reports = []
        for path in channel_paths(name, channels[name]):
            size = path.stat().st_size
            check = JsonlCheck(
                str(path),
                index=index,
                compare_with=train_index if name != "train" else None,
                on_example=count if stats is not None else None,
                size=size,
            )
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    check.feed(chunk)
                    progress(f"checking {path.name}", check.report.bytes, size)
            reports.append(check.close())
        result.files[name] = reports
        if stats is not None:
            result.tokens[name] = stats
        if name == "train":
            train_index = index
    return result


# -- uploading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedObject:
    channel: str
    path: str
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int
    reused: bool  # the same content was there already: its version is pinned

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "path": self.path,
            "uri": self.uri,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "sha256": self.sha256,
            "size": self.size,
            "reused": self.reused,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def object_name(path: Path) -> str:
    """The object's file name: the local one, made safe for keys, ending ``.jsonl`` (the
    training job reads ``*.jsonl`` files only)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.name).strip(".-") or "data"
    return name if name.endswith(".jsonl") else f"{name}.jsonl"


def dataset_key(name: str, path: Path, sha256: str) -> str:
    """``datasets/<name>/<sha256[:16]>/<file name>``: a key per content, so a URI always names
    the bytes it was given for (the version id pins them too)."""
    return f"datasets/{name}/{sha256[:16]}/{object_name(path)}"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise CliError(
            f"--name {elide(repr(name), 80)}: letters, digits, '.', '_' and '-', at most 63, "
            "starting with a letter or digit",
            exit_code=EXIT_USAGE,
        )
    return name


def upload_file(
    s3: Any,
    bucket: str,
    key: str,
    path: Path,
    *,
    channel: str,
    sha256: str,
    progress: Progress = _no_progress,
) -> UploadedObject:
    """Upload ``path`` to ``bucket``/``key`` with its sha256 as metadata, unless the latest
    version there already holds that content. Large files go in parts (one part in memory)."""
    size = path.stat().st_size
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        head = None
    if head is not None and (
        head.get("Metadata", {}).get("sha256") == sha256
        or head.get("ETag", "").strip('"') == _etag(path, size)
    ):
        progress(f"uploading {path.name}", size, size)
        return UploadedObject(
            channel, str(path), bucket, key, head.get("VersionId"), sha256, size, reused=True
        )
    metadata = {"sha256": sha256, "source-name": object_name(path)}
    if size <= PART_BYTES:
        response = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), Metadata=metadata)
        progress(f"uploading {path.name}", size, size)
    else:
        response = _multipart(s3, bucket, key, path, size, metadata, progress)
    return UploadedObject(
        channel, str(path), bucket, key, response.get("VersionId"), sha256, size, reused=False
    )


def _etag(path: Path, size: int) -> str:
    """The ETag S3 gives ``path`` uploaded as ``upload_file`` uploads it, without SSE-KMS (which
    makes ETags opaque; the sha256 metadata is compared there). The local store keeps ETags but
    not metadata."""
    if size <= PART_BYTES:
        return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    digests = []
    with path.open("rb") as handle:
        while part := handle.read(PART_BYTES):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def _multipart(
    s3: Any,
    bucket: str,
    key: str,
    path: Path,
    size: int,
    metadata: dict[str, str],
    progress: Progress,
) -> Any:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)
    parts = []
    try:
        with path.open("rb") as handle:
            number = 0
            while chunk := handle.read(PART_BYTES):
                number += 1
                part = s3.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                progress(f"uploading {path.name}", min(size, number * PART_BYTES), size)
        return s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        raise


def dataset_block(objects: list[UploadedObject], rows: dict[str, int]) -> str:
    """The ``dataset`` block of a run request, pinned: each object's version and sha256."""
    lines = [
        "# finetune data upload: checked, uploaded; the keys name the content (sha256) and the",
        "# launch pins these versions (the run record lists them)",
    ]
    for obj in objects:
        lines.append(
            f"#   {obj.channel}: version {obj.version_id}, sha256 {obj.sha256}, "
            f"{rows.get(obj.channel, 0):,} rows"
        )
    lines.append("dataset:")
    lines.extend(f"  {obj.channel}: {obj.uri}" for obj in objects)
    return "\n".join(lines)


# -- local paths in run requests (local backend) ----------------------------------------------


@dataclass(frozen=True)
class LocalInput:
    field: str  # dataset.train | dataset.validation | base_model
    path: Path
    key: str  # where it is staged (a prefix ending in / for a model folder)
    digest: str

    @property
    def is_folder(self) -> bool:
        return self.key.endswith("/")


def local_datasets_bucket() -> str:
    """The local platform's datasets bucket, as the emulator names it (``bucket_name`` of the
    data stack in moto's default account and the emulator's region)."""
    from stacks.config import load_config

    return f"{load_config('local').prefix}-datasets-123456789012-us-east-1"


def _is_s3(value: object) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def _local_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _model_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in _model_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def find_local_inputs(document: dict[str, Any], base: Path, *, where: str) -> list[LocalInput]:
    """Local paths in a run request: dataset files, a base model folder. A value that is
    neither an ``s3://`` URI nor an existing path is left to the request's validation (a Hub
    id for base_model), except a dataset value, which can only be one or the other."""
    inputs: list[LocalInput] = []
    dataset = document.get("dataset")
    if isinstance(dataset, dict):
        for channel in ("train", "validation"):
            value = dataset.get(channel)
            if not isinstance(value, str) or _is_s3(value):
                continue
            path = _local_path(value, base)
            if not path.is_file():
                raise CliError(
                    f"{where}: dataset.{channel}: {elide(repr(value), 120)} is neither an "
                    f"s3:// URI nor a file ({path} does not exist; relative paths are relative to "
                    "the run file's folder)",
                    exit_code=EXIT_USAGE,
                )
            sha256 = file_sha256(path)
            key = dataset_key(STAGED_DATASETS, path, sha256)
            inputs.append(LocalInput(f"dataset.{channel}", path.resolve(), key, sha256))
    model = document.get("base_model")
    if isinstance(model, str) and not _is_s3(model):
        path = _local_path(model, base)
        looks_like_path = model.startswith(("/", "./", "../", "~"))
        if path.is_dir():
            if not (path / "config.json").is_file() and not list(path.glob("*.tar.gz")):
                raise CliError(
                    f"{where}: base_model: {path} holds no model: expected config.json (a "
                    "save_pretrained folder) or a model.tar.gz",
                    exit_code=EXIT_USAGE,
                )
            digest = _folder_digest(path)
            name = re.sub(r"[^A-Za-z0-9._-]", "-", path.resolve().name).strip(".-") or "model"
            key = f"{STAGED_MODELS}/{name}-{digest[:16]}/"
            inputs.append(LocalInput("base_model", path.resolve(), key, digest))
        elif looks_like_path:
            raise CliError(
                f"{where}: base_model: {elide(repr(model), 120)} is a path, but {path} is not a "
                "folder",
                exit_code=EXIT_USAGE,
            )
    return inputs


def _with_uris(document: dict[str, Any], inputs: list[LocalInput], bucket: str) -> dict[str, Any]:
    staged = copy.deepcopy(document)
    for item in inputs:
        uri = f"s3://{bucket}/{item.key}"
        if item.field == "base_model":
            staged["base_model"] = uri
        else:
            staged["dataset"][item.field.split(".")[1]] = uri
    return staged


def _with_paths(document: dict[str, Any], inputs: list[LocalInput]) -> dict[str, Any]:
    resolved = copy.deepcopy(document)
    for item in inputs:
        if item.field == "base_model":
            resolved["base_model"] = str(item.path)
        else:
            resolved["dataset"][item.field.split(".")[1]] = str(item.path)
    return resolved


def load_launch_file(run_file: Path) -> dict[str, Any]:
    """A run file for ``launch``: as ``load_run_file`` reads it, except that local paths are
    taken (made absolute) and the request is validated with each replaced by the URI the local
    backend stages it at. Without local paths, exactly ``load_run_file``."""
    from finetune.runfile import _SCHEMA_HINT, _read_document, load_run_file

    document = _read_document(run_file)
    if not isinstance(document, dict) or is_deploy_request(document):
        return load_run_file(run_file)[0]
    inputs = find_local_inputs(document, run_file.resolve().parent, where=str(run_file))
    if not inputs:
        return load_run_file(run_file)[0]
    try:
        parse_run_request(_with_uris(document, inputs, local_datasets_bucket()))
    except RunRequestError as error:
        raise CliError(
            f"{run_file}: {'; '.join(elide(problem) for problem in error.problems)}",
            hint=_SCHEMA_HINT,
            exit_code=EXIT_USAGE,
        ) from None
    return _with_paths(document, inputs)


def has_local_inputs(document: dict[str, Any]) -> list[str]:
    """The fields of a (loaded) request that hold local paths."""
    fields: list[str] = []
    dataset = document.get("dataset")
    if isinstance(dataset, dict):
        fields.extend(
            f"dataset.{channel}"
            for channel in ("train", "validation")
            if isinstance(dataset.get(channel), str) and not _is_s3(dataset[channel])
        )
    model = document.get("base_model")
    if isinstance(model, str) and not _is_s3(model) and Path(model).is_absolute():
        fields.append("base_model")
    return fields


def stage_local_inputs(
    s3: Any, bucket: str, document: dict[str, Any], *, say: Callable[[str], None]
) -> dict[str, Any]:
    """The request with its local paths uploaded to the (emulated) datasets bucket and replaced
    by their ``s3://`` URIs; content already staged is reused."""
    if is_deploy_request(document) or not has_local_inputs(document):
        return document
    inputs = find_local_inputs(document, Path.cwd(), where="request")
    for item in inputs:
        if item.is_folder:
            _stage_folder(s3, bucket, item)
            say(
                f"{item.field}: {item.path} staged at s3://{bucket}/{item.key} (sha256 over "
                f"its files {item.digest})"
            )
            continue
        uploaded = upload_file(
            s3, bucket, item.key, item.path, channel=item.field, sha256=item.digest
        )
        say(
            f"{item.field}: {item.path} staged at {uploaded.uri} (sha256 {item.digest}, "
            f"version {uploaded.version_id})"
        )
    return _with_uris(document, inputs, bucket)


def _stage_folder(s3: Any, bucket: str, item: LocalInput) -> None:
    """Every file of a model folder, then a marker next to the prefix (a folder staged halfway
    by a process that ended is staged again)."""
    marker = item.key.rstrip("/") + ".staged"
    try:
        s3.head_object(Bucket=bucket, Key=marker)
        return
    except s3.exceptions.ClientError:
        pass
    for path in _model_files(item.path):
        key = item.key + path.relative_to(item.path).as_posix()
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key=marker, Body=item.digest.encode())


def local_paths_for(backend: str, document: dict[str, Any]) -> dict[str, Any]:
    """The request for ``backend``: local paths are the local backend's to stage; on AWS they
    are uploaded first, with ``finetune data upload`` (which prints the dataset block)."""
    fields = has_local_inputs(document)
    if backend != "local" and fields:
        raise CliError(
            f"{', '.join(fields)}: local paths are staged by the local backend only; on AWS "
            "the request names s3:// URIs in the datasets bucket",
            hint="finetune data upload FILE prints the dataset block to paste",
            exit_code=EXIT_USAGE,
        )
    return document
