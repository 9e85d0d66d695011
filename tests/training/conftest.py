"""Shared fixtures for the training tests: one tiny model per session, SageMaker-like env."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"

# Fast, deterministic settings for in-process runs. A TRL-like 2e-5 barely moves a tiny
# model; 3e-3 gives a clear drop in a few steps.
BASE_HPS: dict[str, object] = {
    "learning_rate": 3e-3,
    "max_seq_length": 256,
    "torch_threads": 1,
    "logging_steps": 2,
    "save_steps": 0,
    "max_steps": 6,
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: Path, count: int) -> list[Any]:
    lines = path.read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm_sft.tiny import build_tiny_model, texts_from_jsonl

    files = sorted(EXAMPLES.rglob("*.jsonl"))
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts_from_jsonl(files))


@pytest.fixture(scope="session")
def chat_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small chat dataset as channel folders: train/ and validation/."""
    root = tmp_path_factory.mktemp("chat")
    write_jsonl(root / "train" / "train.jsonl", read_rows(EXAMPLES / "chat" / "train.jsonl", 120))
    write_jsonl(
        root / "validation" / "validation.jsonl",
        read_rows(EXAMPLES / "chat" / "validation.jsonl", 24),
    )
    return root


@pytest.fixture
def sm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean SageMaker-like environment rooted at tmp_path/ml; returns the base dir."""
    for name in list(os.environ):
        if name.startswith(("SM_", "SAGEMAKER_", "MLFLOW_", "FT_", "LLM_SFT_")):
            monkeypatch.delenv(name)
    base = tmp_path / "ml"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    return base


def cli_args(hyperparameters: Mapping[str, object]) -> list[str]:
    """`--key value` exactly as the sagemaker-training toolkit passes them."""
    from llm_sft.hyperparameters import to_sagemaker_strings

    args: list[str] = []
    for key, value in to_sagemaker_strings(hyperparameters).items():
        args += [f"--{key}", value]
    return args


@dataclass
class MainRun:
    exit_code: int
    base: Path
    output: str

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.is_file() else None

    @property
    def evaluation(self) -> dict[str, Any]:
        return json.loads((self.base / "output" / "data" / "evaluation.json").read_text())

    @property
    def model_dir(self) -> Path:
        return self.base / "model"


RunMain = Callable[..., MainRun]


@pytest.fixture
def run_main(
    sm_env: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> RunMain:
    """Run `llm_sft.cli.main` in-process with toolkit-style args under a SageMaker base dir."""
    from llm_sft.cli import main

    def run(hyperparameters: Mapping[str, object], *, base: Path | None = None) -> MainRun:
        base = base or sm_env
        monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
        hps = {"model_id": str(tiny_model_dir), **BASE_HPS, **hyperparameters}
        capsys.readouterr()
        code = main(cli_args(hps))
        return MainRun(exit_code=code, base=base, output=capsys.readouterr().out)

    return run
