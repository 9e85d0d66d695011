"""Run the SageMaker training contract on this machine, through the real sagemaker-training toolkit.

`run_training_job_locally` lays out an `/opt/ml`-style tree under `work_dir` exactly as a
SageMaker training container sees it, then starts the toolkit's own entry point (what the
project's training image runs: custom-image mode with `SAGEMAKER_PROGRAM`) in a subprocess:

    work_dir/
      input/config/hyperparameters.json   every value a JSON string, as SageMaker writes it
      input/config/inputdataconfig.json   one entry per channel
      input/config/resourceconfig.json    a single host, algo-1
      input/data/<channel>/               a symlink to the caller's folder
      code/                               a copy of source_dir, as the image has it
      model/  output/  output/data/       fresh for every run, as in a new container
      checkpoints/                        kept across runs, as SageMaker restores it
      training.log                        everything the job printed

Running it again on the same `work_dir` is a restarted job (managed spot training): every
folder is new except `checkpoints/`. Pure standard library; never imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_sft.hyperparameters import to_sagemaker_strings
from llm_sft.metrics import MetricRecord, parse_metric_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_DIR = REPO_ROOT / "training_code"
HOST = "algo-1"
LOG_FILE = "training.log"

# Not part of the code folder inside the image: requirements.txt is installed at image build
# (the toolkit would pip-install it again at job start), the rest is build context or cache.
_CODE_IGNORE = shutil.ignore_patterns(
    "requirements.txt",
    "Dockerfile",
    ".dockerignore",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)


@dataclass(frozen=True)
class LocalTrainingResult:
    exit_code: int
    timed_out: bool
    failure_reason: str | None  # content of output/failure (SageMaker's FailureReason)
    model_dir: Path
    output_data_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    log_path: Path
    duration_seconds: float
    metrics: list[MetricRecord] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def final_metrics(self) -> dict[str, float]:
        finals = [m for m in self.metrics if m.final]
        return dict(finals[-1].values) if finals else {}

    def evaluation(self) -> dict[str, Any] | None:
        path = self.output_data_dir / "evaluation.json"
        return json.loads(path.read_text()) if path.is_file() else None


def _fresh(path: Path) -> Path:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def prepare_tree(
    work_dir: Path,
    hyperparameters: Mapping[str, object],
    channels: Mapping[str, Path],
    source_dir: Path,
) -> None:
    """Lay out the container's view of the job under `work_dir` (checkpoints are kept)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = _fresh(work_dir / "input" / "config")
    data = _fresh(work_dir / "input" / "data")
    _write_json(config / "hyperparameters.json", to_sagemaker_strings(hyperparameters))
    _write_json(
        config / "inputdataconfig.json",
        {
            name: {
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
            for name in channels
        },
    )
    _write_json(
        config / "resourceconfig.json",
        {
            "current_host": HOST,
            "current_instance_type": "local",
            "current_group_name": "homogeneousCluster",
            "hosts": [HOST],
            "instance_groups": [
                {
                    "instance_group_name": "homogeneousCluster",
                    "instance_type": "local",
                    "hosts": [HOST],
                }
            ],
            "network_interface_name": "eth0",
        },
    )
    for name, source in channels.items():
        source = Path(source).resolve()
        if not source.exists():
            raise FileNotFoundError(f"channel {name!r}: {source} does not exist")
        if source.is_dir():
            (data / name).symlink_to(source, target_is_directory=True)
        else:  # a single file: a channel folder holding just it
            (data / name).mkdir()
            (data / name / source.name).symlink_to(source)
    code = work_dir / "code"
    if code.exists():
        shutil.rmtree(code)
    shutil.copytree(source_dir, code, ignore=_CODE_IGNORE)
    for name in ("model", "output"):
        _fresh(work_dir / name)
    (work_dir / "output" / "data").mkdir()
    (work_dir / "checkpoints").mkdir(exist_ok=True)


def _environment(
    work_dir: Path, entry_point: str, job_name: str, extra: Mapping[str, str] | None
) -> dict[str, str]:
    # Variables the toolkit derives itself must not leak in from the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        {
            "SAGEMAKER_BASE_DIR": str(work_dir),
            "SAGEMAKER_PROGRAM": entry_point,
            "SM_STUDIO_LOCAL_MODE": "true",  # skip the toolkit's wait for cluster DNS
            "SM_CHECKPOINT_DIR": str(work_dir / "checkpoints"),
            "TRAINING_JOB_NAME": job_name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _stream(
    process: subprocess.Popen[str], log_path: Path, sink: Callable[[str], None] | None
) -> None:
    assert process.stdout is not None
    with log_path.open("w", encoding="utf-8") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()
            if sink is not None:
                sink(line.rstrip("\n"))


def run_training_job_locally(
    work_dir: Path,
    *,
    hyperparameters: Mapping[str, object],
    channels: Mapping[str, Path],
    environment: Mapping[str, str] | None = None,
    source_dir: Path = DEFAULT_SOURCE_DIR,
    entry_point: str = "train.py",
    timeout_seconds: float | None = None,
    job_name: str = "local-training-job",
    python_executable: str = sys.executable,
    log_sink: Callable[[str], None] | None = None,
) -> LocalTrainingResult:
    """Emulate one SageMaker training job (or its restart) and wait for it to end.

    `hyperparameters` may hold Python values; they are written as SageMaker stores them
    (`True`/`False`, list reprs). `log_sink` receives every log line as it is printed.
    """
    work_dir = Path(work_dir).resolve()
    prepare_tree(work_dir, hyperparameters, channels, Path(source_dir))
    log_path = work_dir / LOG_FILE
    command = [
        python_executable,
        "-c",
        "from sagemaker_training.cli.train import main; main()",
    ]
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - fixed command: this Python and the toolkit
        command,
        cwd=work_dir,
        env=_environment(work_dir, entry_point, job_name, environment),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # so a timeout can end the toolkit and the script together
    )
    reader = threading.Thread(target=_stream, args=(process, log_path, log_sink), daemon=True)
    reader.start()
    timed_out = False
    try:
        exit_code = process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        exit_code = process.wait()
    reader.join()
    failure = work_dir / "output" / "failure"
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return LocalTrainingResult(
        exit_code=exit_code,
        timed_out=timed_out,
        failure_reason=failure.read_text(encoding="utf-8").strip() if failure.is_file() else None,
        model_dir=work_dir / "model",
        output_data_dir=work_dir / "output" / "data",
        output_dir=work_dir / "output",
        checkpoint_dir=work_dir / "checkpoints",
        log_path=log_path,
        duration_seconds=time.monotonic() - started,
        metrics=parse_metric_lines(text.splitlines()),
    )
