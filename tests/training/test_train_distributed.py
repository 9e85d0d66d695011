"""Training under torchrun with gloo on CPU, and SageMaker's toolkit starting it on two hosts.

Every scenario compares with one reference: the same job in one process with the same global
batch (8 rows per step: 2 processes x 2 rows x 2 micro-batches there, 1 process x 4 rows x 2
micro-batches here). Tolerance: final losses within 1e-5 relative, LoRA weights within 1e-5
absolute (float32 on CPU; the runs differ only in summation order -- all-reduce, padding of
micro-batches -- measured ~2e-7). LoRA dropout is 0 in these runs: with dropout every process
draws its own masks, which one process cannot reproduce.

Launches (each one torchrun or toolkit start, ~5-10 s on 2 cores): the toolkit job on two
emulated instances, interrupted at step 3 and restarted (resume + equivalence + who writes);
FSDP under plain torchrun (equivalence + who writes); bad data under plain torchrun.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetune.local_training import LocalTrainingResult, run_training_job_locally
from llm_sft.metrics import parse_metric_lines
from llm_sft.trainer import INTERRUPT_ENV

from .conftest import REPO, cli_args, write_jsonl

pytestmark = pytest.mark.slow

TRAIN_PY = REPO / "training_code" / "train.py"
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5

# Per process: 2 rows x 2 micro-batches; with 2 processes, 8 rows per optimizer step.
HPS: dict[str, object] = {
    "learning_rate": 3e-3,
    "max_seq_length": 256,
    "torch_threads": 1,
    "logging_steps": 1,
    "save_steps": 2,
    "max_steps": 6,
    "lora_dropout": 0.0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
}
# The same global batch in one process.
REFERENCE_HPS = {**HPS, "per_device_train_batch_size": 4}

needs_framework = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("sagemaker_pytorch_container") is None,
    reason="sagemaker-pytorch-training (the image's framework module) is not installed",
)


@dataclass
class Run:
    exit_code: int
    base: Path
    log: str

    def evaluation(self) -> dict[str, Any]:
        return json.loads((self.base / "output" / "data" / "evaluation.json").read_text())


def read_adapter(checkpoints: Path, step: int = 6) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(checkpoints / f"checkpoint-{step}" / "adapter_model.safetensors"))


def _clean_env(base: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    prefixes = ("SM_", "SAGEMAKER_", "MLFLOW_", "FT_", "LLM_SFT_", "RANK", "WORLD_SIZE", "LOCAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "OMP_NUM_THREADS": "1", **(extra or {})})
    return env


def torchrun(base: Path, hyperparameters: Mapping[str, object], nproc: int = 2) -> Run:
    """`torchrun --standalone --nproc_per_node N train.py --key value ...` (gloo on CPU)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(TRAIN_PY),
        *cli_args(hyperparameters),
    ]
    done = subprocess.run(
        command,
        env=_clean_env(base),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(done.returncode, base, done.stdout + done.stderr)


def _assert_same_adapter(got: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    assert set(got) == set(expected)
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    assert worst <= WEIGHT_ATOL, f"LoRA weights differ by up to {worst}"


def _assert_same_losses(got: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    for key in ("train_loss", "eval_loss"):
        assert got[key] == pytest.approx(expected[key], rel=LOSS_RTOL), key
    assert got["global_step"] == expected["global_step"] == 6
    assert got["train_tokens"] == expected["train_tokens"]


def _metric_steps(log: str) -> list[int]:
    return [
        m.step for m in parse_metric_lines(log.splitlines()) if "train_loss" in m.values and m.step
    ]


@pytest.fixture(scope="module")
def reference(
    tiny_model_dir: Path, chat_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, dict[str, Any]]:
    """One process, in this test process (torch is imported already)."""
    from llm_sft.cli import main

    base = tmp_path_factory.mktemp("reference")
    hps = {
        "model_id": str(tiny_model_dir),
        "train_dir": str(chat_subset / "train"),
        "validation_dir": str(chat_subset / "validation"),
        "checkpoint_dir": str(base / "checkpoints"),
        **REFERENCE_HPS,
    }
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        for name in list(os.environ):
            if name.startswith(("SM_", "SAGEMAKER_", "MLFLOW_", "FT_", "LLM_SFT_", "WORLD_SIZE")):
                patch.delenv(name)
        patch.setenv("SAGEMAKER_BASE_DIR", str(base))
        code = main(cli_args(hps))
    run = Run(code, base, out.getvalue())
    assert code == 0, run.log
    return run, read_adapter(base / "checkpoints")


@dataclass
class ToolkitJob:
    interrupted: LocalTrainingResult
    interrupted_log: str  # the restart rewrites the log file
    resumed: LocalTrainingResult


@pytest.fixture(scope="module")
def toolkit_job(
    tiny_model_dir: Path, chat_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> ToolkitJob:
    """Two emulated instances, one process each; interrupted after step 3, then restarted."""
    work = tmp_path_factory.mktemp("toolkit") / "opt_ml"

    def start(environment: Mapping[str, str]) -> LocalTrainingResult:
        return run_training_job_locally(
            work,
            hyperparameters={
                "model_id": str(tiny_model_dir),
                **HPS,
                # What the SageMaker SDK's distribution={"torch_distributed": {"enabled": True}}
                # adds; the launch function sets it for distributed jobs.
                "sagemaker_torch_distributed_enabled": "true",
            },
            channels={"train": chat_subset / "train", "validation": chat_subset / "validation"},
            environment=environment,
            instance_count=2,
            timeout_seconds=300,
        )

    interrupted = start({INTERRUPT_ENV: "3"})
    return ToolkitJob(interrupted, interrupted.log, resumed=start({}))


@needs_framework
def test_toolkit_starts_torchrun_on_every_instance(toolkit_job: ToolkitJob) -> None:
    result = toolkit_job.resumed
    assert result.succeeded, result.log[-3000:] + result.peers[0].log[-3000:]
    (peer,) = result.peers
    command = "torchrun --nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port 7777"
    assert f"{command} --node_rank 0 train.py" in result.log
    assert f"{command} --node_rank 1 train.py" in peer.log
    evaluation = result.evaluation()
    assert evaluation is not None
    assert evaluation["distributed"] == {
        "strategy": "ddp",
        "reason": "2 CPU processes, each with the whole model",
        "world_size": 2,
        "nodes": 2,
        "rows_per_step": 8,
    }


@needs_framework
def test_interrupted_job_fails_on_every_instance_and_resumes_exactly(
    toolkit_job: ToolkitJob, reference: tuple[Run, dict[str, Any]]
) -> None:
    first, second = toolkit_job.interrupted, toolkit_job.resumed
    assert first.exit_code != 0
    assert all(peer.exit_code != 0 for peer in first.peers)
    assert first.failure_reason == "Interrupted: simulated interruption after step 3"
    assert _metric_steps(toolkit_job.interrupted_log) == [1, 2, 3]
    assert "resuming from step 2" in second.log
    assert _metric_steps(second.log) == [3, 4, 5, 6]
    evaluation = second.evaluation()
    assert evaluation is not None
    assert evaluation["resumed_from_step"] == 2
    ref_run, ref_adapter = reference
    _assert_same_losses(evaluation, ref_run.evaluation())
    _assert_same_adapter(read_adapter(second.checkpoint_dir), ref_adapter)


@needs_framework
def test_only_rank_0_writes(toolkit_job: ToolkitJob) -> None:
    result = toolkit_job.resumed
    (peer,) = result.peers
    assert (result.model_dir / "config.json").is_file()
    assert sorted(p.name for p in result.checkpoint_dir.glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-6",
    ]
    # The second instance (rank 1) printed no METRIC line and wrote nothing.
    assert parse_metric_lines(peer.log.splitlines()) == []
    assert list(peer.model_dir.iterdir()) == []
    assert list(peer.output_data_dir.iterdir()) == []
    assert list(peer.checkpoint_dir.iterdir()) == []
    assert peer.failure_reason is None
    # One METRIC line per step, not one per process.
    steps = _metric_steps(result.log)
    assert steps == sorted(set(steps))


def test_fsdp_matches_one_process(
    tmp_path: Path,
    tiny_model_dir: Path,
    chat_subset: Path,
    reference: tuple[Run, dict[str, Any]],
) -> None:
    hps = {
        "model_id": str(tiny_model_dir),
        "train_dir": str(chat_subset / "train"),
        "validation_dir": str(chat_subset / "validation"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "distributed_strategy": "fsdp",
        **HPS,
    }
    run = torchrun(tmp_path / "ml", hps)
    assert run.exit_code == 0, run.log[-4000:]
    assert "FSDP: 2 ['LlamaDecoderLayer'] layers sharded over 2 processes" in run.log
    evaluation = run.evaluation()
    assert evaluation["distributed"]["strategy"] == "fsdp"
    ref_run, ref_adapter = reference
    _assert_same_losses(evaluation, ref_run.evaluation())
    _assert_same_adapter(read_adapter(tmp_path / "checkpoints"), ref_adapter)
    # Two processes, one writer: each step's METRIC line once, INFO lines from rank 0 only.
    assert _metric_steps(run.log) == [1, 2, 3, 4, 5, 6]
    assert "INFO llm_sft.training [rank 1]" not in run.log
    assert (run.base / "model" / "model.safetensors").is_file()


def test_bad_data_fails_every_process_with_one_failure_file(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows: list[Any] = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    train = write_jsonl(tmp_path / "data" / "part-0.jsonl", rows).parent
    hps = {"model_id": str(tiny_model_dir), "train_dir": str(train), "max_steps": 2}
    run = torchrun(tmp_path / "ml", hps)
    assert run.exit_code != 0
    failures = list((tmp_path / "ml").rglob("failure"))
    assert failures == [tmp_path / "ml" / "output" / "failure"]
    reason = failures[0].read_text()
    assert reason.startswith("Data error: ")
    assert "part-0.jsonl:2: conversation has no assistant turn" in reason
    # Every process stops at validation (each logs the same reason, if torchrun has not
    # already stopped it): no model is loaded, no process group is formed.
    errors = [line for line in run.log.splitlines() if "ERROR llm_sft" in line]
    assert errors
    assert all(line.endswith(reason.strip()) for line in errors)
    assert "strategy:" not in run.log
