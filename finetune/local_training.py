"""Run the SageMaker training contract on this machine, through the real sagemaker-training toolkit.

`run_training_job_locally` lays out an `/opt/ml`-style tree under `work_dir` exactly as a
SageMaker training container sees it, then starts the toolkit's own entry point (what the
project's training image runs: custom-image mode with `SAGEMAKER_PROGRAM`, and
`SAGEMAKER_TRAINING_MODULE` naming the PyTorch framework module when it is installed, as in
the image and the AWS Hugging Face container) in a subprocess:

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

Distributed jobs: the hyperparameter `sagemaker_torch_distributed_enabled` (what the SageMaker
SDK's `distribution={"torch_distributed": {"enabled": True}}` sets) makes the framework
module start the script through the toolkit's torchrun launcher. `instance_count=N` emulates N
instances on this machine: N toolkit processes, each with its own tree (`work_dir` for the
first, `<work_dir>-host-<n>` for the others), whose resource configs list the same hosts. The
hosts are named by loopback addresses (127.0.0.1, 127.0.0.2, ...) instead of `algo-1`,
`algo-2`, so that torchrun's rendezvous at the first host resolves without DNS. What is not
emulated: separate machines (the processes share this one's CPUs), EFA/NCCL networking, and
S3 (each host's checkpoint folder is its own, as on SageMaker).
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
# The PyTorch framework module of the training image and of the AWS Hugging Face / PyTorch
# containers: it reads `sagemaker_torch_distributed_enabled` and starts torchrun.
PYTORCH_FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"

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
    # The other emulated instances of a multi-instance job (their own trees and logs).
    peers: list[LocalTrainingResult] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and all(p.succeeded for p in self.peers)

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def final_metrics(self) -> dict[str, float]:
        """DescribeTrainingJob's FinalMetricDataList: for each metric definition, the last value
        its regex matched in the job's log (SageMaker applies every definition to every line)."""
        import re

        from llm_sft.metrics import METRIC_DEFINITIONS

        found: dict[str, float] = {}
        lines = self.log.splitlines() if self.log_path.is_file() else []
        for definition in METRIC_DEFINITIONS:
            regex = re.compile(definition["Regex"])
            for line in lines:
                match = regex.search(line)
                if match is not None:
                    found[definition["Name"]] = float(match.group(1))
        return found

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
    hosts: tuple[str, ...] = (HOST,),
    current_host: str = HOST,
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
            "current_host": current_host,
            "current_instance_type": "local",
            "current_group_name": "homogeneousCluster",
            "hosts": list(hosts),
            "instance_groups": [
                {
                    "instance_group_name": "homogeneousCluster",
                    "instance_type": "local",
                    "hosts": list(hosts),
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


def framework_module_available(python_executable: str = sys.executable) -> bool:
    """Whether `python_executable` has the PyTorch framework module (sagemaker-pytorch-training)."""
    module = PYTORCH_FRAMEWORK_MODULE.split(":")[0]
    check = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python_executable, "-c", check], check=False).returncode == 0  # noqa: S603


def _environment(
    work_dir: Path,
    entry_point: str,
    job_name: str,
    extra: Mapping[str, str] | None,
    framework_module: str | None,
    python_executable: str = sys.executable,
) -> dict[str, str]:
    # Variables the toolkit derives itself must not leak in from the caller's shell, nor the
    # caller's torchrun variables (a test process may itself run under torchrun).
    inherited = ("SM_", "SAGEMAKER_", "RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "TORCHELASTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    if framework_module:
        env["SAGEMAKER_TRAINING_MODULE"] = framework_module
    # The toolkit starts `torchrun` by name: the console scripts beside this Python (a
    # virtualenv's bin/) come first on PATH, as the image's do.
    scripts = str(Path(python_executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
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


def host_names(instance_count: int) -> tuple[str, ...]:
    """`algo-1` for one instance; loopback addresses for an emulated cluster (see above)."""
    if instance_count == 1:
        return (HOST,)
    return tuple(f"127.0.0.{n}" for n in range(1, instance_count + 1))


def host_work_dir(work_dir: Path, index: int) -> Path:
    """The tree of emulated instance `index` (0 is `work_dir` itself)."""
    return work_dir if index == 0 else work_dir.with_name(f"{work_dir.name}-host-{index + 1}")


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
    instance_count: int = 1,
    framework_module: str | None = PYTORCH_FRAMEWORK_MODULE,
) -> LocalTrainingResult:
    """Emulate one SageMaker training job (or its restart) and wait for it to end.

    `hyperparameters` may hold Python values; they are written as SageMaker stores them
    (`True`/`False`, list reprs). `log_sink` receives every log line of the first instance as
    it is printed. `framework_module` is used when `python_executable` has it installed
    (otherwise the toolkit runs the script as one process, as it would in an image without it).
    """
    if instance_count < 1:
        raise ValueError(f"instance_count must be >= 1, got {instance_count}")
    work_dir = Path(work_dir).resolve()
    if framework_module and not framework_module_available(python_executable):
        framework_module = None
    hosts = host_names(instance_count)
    command = [
        python_executable,
        "-c",
        "from sagemaker_training.cli.train import main; main()",
    ]
    started = time.monotonic()
    processes: list[tuple[Path, subprocess.Popen[str], threading.Thread]] = []
    for index, host in enumerate(hosts):
        tree = host_work_dir(work_dir, index)
        prepare_tree(tree, hyperparameters, channels, Path(source_dir), hosts, host)
        process = subprocess.Popen(  # noqa: S603 - fixed command: this Python and the toolkit
            command,
            cwd=tree,
            env=_environment(
                tree, entry_point, job_name, environment, framework_module, python_executable
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # so a timeout can end the toolkit and the script together
        )
        sink = log_sink if index == 0 else None
        reader = threading.Thread(
            target=_stream, args=(process, tree / LOG_FILE, sink), daemon=True
        )
        reader.start()
        processes.append((tree, process, reader))
    deadline = None if timeout_seconds is None else started + timeout_seconds
    results: list[LocalTrainingResult] = []
    for tree, process, reader in processes:
        timed_out = False
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            exit_code = process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            timed_out = True
            for _, other, _ in processes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            exit_code = process.wait()
        reader.join()
        results.append(_result(tree, exit_code, timed_out, time.monotonic() - started))
    first, *peers = results
    first.peers.extend(peers)
    return first


def _result(tree: Path, exit_code: int, timed_out: bool, seconds: float) -> LocalTrainingResult:
    failure = tree / "output" / "failure"
    log_path = tree / LOG_FILE
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return LocalTrainingResult(
        exit_code=exit_code,
        timed_out=timed_out,
        failure_reason=failure.read_text(encoding="utf-8").strip() if failure.is_file() else None,
        model_dir=tree / "model",
        output_data_dir=tree / "output" / "data",
        output_dir=tree / "output",
        checkpoint_dir=tree / "checkpoints",
        log_path=log_path,
        duration_seconds=seconds,
        metrics=parse_metric_lines(text.splitlines()),
    )
