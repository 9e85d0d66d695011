"""``finetune data check`` and ``finetune data upload``: your own JSONL, checked with the training
code's own rules before it costs GPU time, then uploaded to the platform's datasets bucket with
the pinned ``dataset`` block to paste into a run request.

Exit codes as everywhere: 0 done (warnings listed), 2 the data breaks a rule (each error names
file and line; nothing uploaded). Progress bars on a terminal, plain lines otherwise (files over
``PLAIN_PROGRESS_BYTES``); ``--json`` prints the report on stdout.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from finetune.cli_options import AwsFlag, JsonFlag, LocalFlag
from finetune.errors import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from finetune.cli import Options
    from finetune.datasets import CheckResult

__all__ = ["data_app"]

data_app = typer.Typer(
    name="data",
    help="Check your JSONL with the training code's rules; upload it to the datasets bucket.",
    no_args_is_help=True,
)

MIB = 1024 * 1024
#: Without a terminal, files at least this large report progress every 10%.
PLAIN_PROGRESS_BYTES = 32 * MIB
#: Lines of errors and warnings printed per kind (all are counted; --json has 20 per file).
SHOWN = 10

TrainArgument = Annotated[
    Path, typer.Argument(help="Training data: a JSONL file (or a folder of them).")
]
ValidationOption = Annotated[
    Path | None, typer.Option("--validation", help="Validation data: a JSONL file or folder.")
]


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """Bars on a terminal; otherwise a line per 10% of a large file."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.reported: dict[str, int] = {}

    @contextmanager
    def active(self) -> Iterator[_Progress]:
        if not self.console.is_terminal:
            yield self
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bars:
            self.bars = bars
            yield self
        self.bars = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.bars is not None:
            if what not in self.tasks:
                self.tasks[what] = self.bars.add_task(what, total=total)
            self.bars.update(self.tasks[what], completed=done, total=total)
            return
        if total < PLAIN_PROGRESS_BYTES:
            return
        tenth = done * 10 // max(total, 1)
        if tenth > self.reported.get(what, 0):
            self.reported[what] = tenth
            self.console.print(
                f"{what}: {tenth * 10}% ({done / MIB:,.0f} of {total / MIB:,.0f} MiB)",
                highlight=False,
            )


# -- commands ---------------------------------------------------------------------------------


@data_app.command("check")
def check(
    ctx: typer.Context,
    train: TrainArgument,
    validation: ValidationOption = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="Count tokens with this model's tokenizer: a local folder, an s3:// model "
            "folder (the local platform's too, e.g. the demo's tiny model) or a Hub id.",
        ),
    ] = None,
    max_seq_length: Annotated[
        int,
        typer.Option(min=16, help="The run's max_seq_length: rows longer are truncated."),
    ] = 1024,
    epochs: Annotated[
        float, typer.Option(min=0.01, help="Epochs, for the training tokens to estimate.")
    ] = 1.0,
    json_output: JsonFlag = False,
) -> None:
    """Check JSONL as the training job will: errors with file and line, duplicates, tokens.

    Format (chat / prompt-completion), rows, every rule the training job enforces (exit 2,
    naming file and line), warnings (repeated rows, empty turns, validation rows that are
    training rows); with --base-model, token counts against --max-seq-length (truncated and
    dropped rows) and the training tokens for finetune estimate."""
    from finetune.cli import _run

    def action(options: Options) -> None:
        tokenizer, name = (None, None)
        if base_model is not None:
            tokenizer, name = _load_tokenizer(options, base_model)
        result = _check(
            options, train, validation, tokenizer=tokenizer, name=name, length=max_seq_length
        )
        if options.json:
            report = result.to_dict()
            if result.tokens.get("train"):
                report["estimate_tokens"] = int(result.tokens["train"].tokens * epochs)
            options.out.print_json(json.dumps(report))
        else:
            _print_check(options.out, result, epochs)
        _refuse_errors(result)

    _run(ctx, action, json_output=json_output)


@data_app.command("upload")
def upload(
    ctx: typer.Context,
    train: TrainArgument,
    validation: ValidationOption = None,
    name: Annotated[
        str | None,
        typer.Option(help="Folder under datasets/ (default: the training file's name)."),
    ] = None,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Check, upload to the datasets bucket (AWS or local), print the pinned dataset block.

    Nothing is uploaded when the data breaks a rule (exit 2). Keys name the content
    (datasets/NAME/SHA256[:16]/FILE); the same file uploaded again keeps its version. The
    printed block goes into a run request as it is."""
    from finetune.cli import _backend, _run
    from finetune.datasets import check_name, dataset_block, dataset_key, file_sha256

    def action(options: Options) -> None:
        for path in (train, validation):
            if path is not None and not path.is_file():
                raise CliError(
                    f"{path}: not a file (upload takes JSONL files; check takes folders too)",
                    exit_code=EXIT_USAGE,
                )
        folder = check_name(name or _default_name(train))
        result = _check(options, train, validation, tokenizer=None, name=None, length=1024)
        if not result.ok:
            _print_check(options.err, result, 1.0)
            _refuse_errors(result, uploaded=False)
        files = {"train": train, **({"validation": validation} if validation else {})}
        backend = _backend(options)
        progress = _Progress(options.err)
        with _bucket(backend) as (s3, bucket), progress.active():
            uploaded = []
            for channel, path in files.items():
                sha256 = file_sha256(path)
                uploaded.append(
                    _upload_one(
                        s3,
                        bucket,
                        dataset_key(folder, path, sha256),
                        path,
                        channel,
                        sha256,
                        progress,
                    )
                )
        rows = {channel: sum(r.rows for r in result.files[channel]) for channel in files}
        for obj in uploaded:
            verb = "already uploaded (same sha256)" if obj.reused else "uploaded"
            options.err.print(
                f"{obj.path}: {verb} to {obj.uri} (version {obj.version_id})", highlight=False
            )
        for warning in result.warnings():
            options.err.print(Text.assemble(("warning:", "yellow"), " ", warning), highlight=False)
        if options.json:
            document = {
                "dataset": {obj.channel: obj.uri for obj in uploaded},
                "objects": {obj.channel: obj.to_dict() for obj in uploaded},
                "check": result.to_dict(),
            }
            options.out.print_json(json.dumps(document))
        else:
            options.out.print(dataset_block(uploaded, rows), highlight=False)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


def _upload_one(
    s3: Any, bucket: str, key: str, path: Path, channel: str, sha256: str, progress: _Progress
) -> Any:
    from finetune.datasets import upload_file

    return upload_file(s3, bucket, key, path, channel=channel, sha256=sha256, progress=progress)


# -- pieces -----------------------------------------------------------------------------------


def _check(
    options: Options,
    train: Path,
    validation: Path | None,
    *,
    tokenizer: Any,
    name: str | None,
    length: int,
) -> CheckResult:
    from finetune.datasets import check_channels

    channels = {"train": train, **({"validation": validation} if validation else {})}
    for channel, path in channels.items():
        if not path.exists():
            raise CliError(f"{path}: No such file or directory ({channel})", exit_code=EXIT_USAGE)
    progress = _Progress(options.err)
    with progress.active():
        return check_channels(
            channels,
            tokenizer=tokenizer,
            tokenizer_name=name,
            max_seq_length=length,
            progress=progress,
        )


def _refuse_errors(result: CheckResult, *, uploaded: bool = True) -> None:
    if result.ok:
        return
    first = next(
        error for reports in result.files.values() for report in reports for error in report.errors
    )
    count = result.error_count
    raise CliError(
        f"{count:,} error{'s' if count != 1 else ''} in the data; the first: {first}",
        hint="fix the rows named above (training_code/README.md describes the format)"
        + ("" if uploaded else "; nothing was uploaded"),
        exit_code=EXIT_USAGE,
    )


def _default_name(train: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", train.stem).strip(".-_")
    return stem[:63] or "dataset"


@contextmanager
def _bucket(backend: Any) -> Iterator[tuple[Any, str]]:
    """An S3 client and the platform's datasets bucket: the deployed stack's output on AWS, the
    emulated bucket (committed to the local state store) locally."""
    if backend.name == "local":
        with backend.session.platform() as local:
            yield local.client("s3"), local.platform.datasets_bucket
        return
    yield backend.client("s3"), backend.outputs()["DatasetsBucketName"]


def _load_tokenizer(options: Options, base_model: str) -> tuple[Any, str]:
    """The training job's tokenizer for ``base_model`` (same loading: EOS, pad, chat template)."""
    from llm_sft.errors import UserError
    from llm_sft.hyperparameters import Hyperparameters
    from llm_sft.modeling import load_tokenizer, resolve_base_model

    source = _tokenizer_source(options, base_model)
    try:
        base = resolve_base_model(source, None)
        tokenizer = load_tokenizer(base, Hyperparameters(model_id=source))
    except UserError as error:
        raise CliError(f"--base-model: {error}", exit_code=EXIT_USAGE) from None
    return tokenizer, base_model


#: Files a tokenizer may need from a model folder (weights are never downloaded for it).
_TOKENIZER_FILE = re.compile(
    r"(^|/)(config\.json|generation_config\.json|tokenizer[^/]*|special_tokens_map\.json"
    r"|added_tokens\.json|vocab[^/]*|merges\.txt|[^/]*\.model|chat_template[^/]*)$"
)


def _tokenizer_source(options: Options, base_model: str) -> str:
    """A local folder holding the tokenizer of ``base_model``, or the Hub id itself."""
    from finetune.datasets import local_datasets_bucket
    from runspec.request import S3_URI

    match = S3_URI.match(base_model)
    if match is None:
        return base_model  # a local folder, or a Hub id (downloaded by transformers)
    bucket, prefix = match.group("bucket"), match.group("key")
    if not prefix.endswith("/"):
        prefix += "/"
    target = Path(tempfile.mkdtemp(prefix="finetune-tokenizer-"))
    if bucket == local_datasets_bucket():
        from finetune.local.session import TINY_MODEL_KEY, LocalSession
        from finetune.local.store import StateStore

        if prefix == TINY_MODEL_KEY:  # the demo's base model: built locally, not stored
            return str(LocalSession.tiny_model())
        database = options.state_dir / "state.db"
        if not database.is_file():
            raise CliError(
                f"--base-model: {base_model} is not on the local platform ({database} holds "
                "no state yet)",
                exit_code=EXIT_USAGE,
            )
        store = StateStore(database)
        keys = store.object_keys(bucket, prefix)
        for key in keys:
            if _TOKENIZER_FILE.search(key[len(prefix) :]):
                stored = store.get_object(bucket, key)
                if stored is not None:
                    _write(target / key[len(prefix) :], stored.body)
    else:
        import boto3

        s3 = boto3.client("s3")
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
        for key in keys:
            if _TOKENIZER_FILE.search(key[len(prefix) :]):
                _write(
                    target / key[len(prefix) :],
                    s3.get_object(Bucket=bucket, Key=key)["Body"].read(),
                )
    if not any(target.rglob("tokenizer*")):
        raise CliError(
            f"--base-model: no tokenizer files under {base_model}",
            hint="give the folder of a save_pretrained model (tokenizer.json, config.json, ...)",
            exit_code=EXIT_USAGE,
        )
    return str(target)


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


# -- rendering --------------------------------------------------------------------------------


def _print_check(console: Console, result: CheckResult, epochs: float) -> None:
    table = Table(title="Data check (the training job's rules)")
    for column in ("channel", "file", "format", "rows", "errors", "warnings", "checked"):
        table.add_column(column)
    for channel, reports in result.files.items():
        for report in reports:
            table.add_row(
                channel,
                report.name,
                report.format,
                f"{report.rows:,}",
                Text(f"{report.error_count:,}", style="red" if report.error_count else ""),
                f"{report.warning_count:,}",
                f"{report.bytes / MIB:,.1f} MiB" if report.bytes >= MIB else f"{report.bytes:,} B",
            )
    console.print(table)
    errors = [e for reports in result.files.values() for r in reports for e in r.errors]
    for error in errors[:SHOWN]:
        console.print(Text.assemble(("error:", "bold red"), " ", error), highlight=False)
    if result.error_count > SHOWN:
        console.print(
            f"... {result.error_count - SHOWN:,} more errors (--json lists 20 per file)",
            highlight=False,
        )
    for warning in result.warnings():
        console.print(Text.assemble(("warning:", "yellow"), " ", warning), highlight=False)
    total_warnings = sum(r.warning_count for rs in result.files.values() for r in rs)
    if total_warnings:
        console.print(
            "(--json lists the rows behind each warning, the first 20 of each file)",
            style="dim",
            highlight=False,
        )
    for channel, stats in result.tokens.items():
        console.print(
            Text.assemble(
                (f"{channel} tokens", "bold"),
                f" ({result.tokenizer}, max_seq_length {stats.max_seq_length:,}): "
                f"{stats.tokens:,} per epoch, longest row {stats.longest:,}, "
                f"{stats.truncated:,} truncated, {stats.dropped:,} dropped "
                "(no trainable token left)",
            ),
            highlight=False,
        )
        peak = max(stats.histogram.values(), default=0) or 1
        for label, count in stats.histogram.items():
            bar = "█" * round(30 * count / peak)
            console.print(f"  {label:>9} {count:>9,} {bar}", highlight=False)
    if "train" in result.tokens:
        tokens = int(result.tokens["train"].tokens * epochs)
        console.print(
            f"estimate with: finetune estimate RUN_FILE --tokens {tokens} "
            f"({epochs:g} epoch{'s' if epochs != 1 else ''})",
            style="dim",
            highlight=False,
        )
    elif result.ok:
        characters = sum(r.characters for r in result.files.get("train", []))
        console.print(
            f"~{characters // 4:,} training tokens per epoch (characters / 4); "
            "--base-model counts them exactly",
            style="dim",
            highlight=False,
        )
    console.print(
        Text.assemble(
            ("ok", "green") if result.ok else ("refused", "red"),
            f": {sum(len(rs) for rs in result.files.values())} files, "
            f"{result.error_count:,} errors, {total_warnings:,} warnings",
        ),
        highlight=False,
    )
