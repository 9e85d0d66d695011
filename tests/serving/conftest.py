"""The serving contract under test: a trained tiny Llama-3-style model and the serving stack.

The serving environment is the serving container's model-reading packages (transformers,
tokenizers, huggingface-hub, safetensors at ``SERVING_STACK``'s pins) installed by
``make setup-serving`` into ``.venv/serving-contract`` with ``pip --target --no-deps``; torch and
the remaining pure-Python dependencies come from ``.venv`` behind it on ``PYTHONPATH``. It is
not the container itself (no CUDA kernels, torch 2.13 instead of 2.7): what it reproduces is
how the container's libraries *read the folder* - config keys, tokenizer class, chat template -
and compute the model from what they read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
SERVING_ENV = Path(os.environ.get("LLMFT_SERVING_ENV", REPO / ".venv" / "serving-contract"))
PROBE = Path(__file__).with_name("probe.py")

#: A Llama 3 base's rope: theta 500000 and llama3 scaling. original_max_position_embeddings is
#: small so that scaled frequencies matter within the few hundred positions the test uses.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 256,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "serving_contract: pins the training and serving stacks' versions; a version bump on"
        " either side fails until llm_sft.serving_contract is re-verified",
    )


def read_rows(path: Path, count: int, start: int = 0) -> list[Any]:
    lines = path.read_text(encoding="utf-8").splitlines()[start : start + count]
    return [json.loads(line) for line in lines]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def serving_env() -> Path:
    """The serving environment; fails (not skips) when missing: `make test` builds it."""
    if not (SERVING_ENV / ".installed").is_file():
        pytest.fail(
            f"no serving-contract environment at {SERVING_ENV}: run `make setup-serving`"
            " (make test does)",
            pytrace=False,
        )
    return SERVING_ENV


@pytest.fixture(scope="session")
def llama3_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with Llama 3's rope (built in-process: nothing is downloaded)."""
    from llm_sft.tiny import build_tiny_model, texts_from_jsonl

    folder = build_tiny_model(
        tmp_path_factory.mktemp("llama3") / "base",
        texts_from_jsonl(sorted(EXAMPLES.rglob("*.jsonl"))),
    )
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_parameters"] = dict(LLAMA3_ROPE)
    config_path.write_text(json.dumps(config, indent=2))
    return folder


@dataclass(frozen=True)
class TrainedModel:
    base: Path
    model_dir: Path
    data: Path

    def reference(self) -> dict[str, Any]:
        from llm_sft.serving_contract import REFERENCE_FILE

        return dict(json.loads((self.model_dir / REFERENCE_FILE).read_text()))


@pytest.fixture(scope="session")
def trained_llama3(
    llama3_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainedModel]:
    """A real training job (the cli entry point, merged output) on the Llama-3-style base."""
    import torch

    from llm_sft.cli import main
    from llm_sft.hyperparameters import to_sagemaker_strings

    root = tmp_path_factory.mktemp("job")
    data = root / "data"
    write_jsonl(data / "train" / "train.jsonl", read_rows(EXAMPLES / "chat" / "train.jsonl", 48))
    write_jsonl(
        data / "validation" / "validation.jsonl",
        read_rows(EXAMPLES / "chat" / "validation.jsonl", 12),
    )
    hyperparameters = {
        "model_id": str(llama3_base),
        "train_dir": str(data / "train"),
        "validation_dir": str(data / "validation"),
        "model_dir": str(root / "model"),
        "output_data_dir": str(root / "output" / "data"),
        "output_dir": str(root / "output"),
        "checkpoint_dir": str(root / "checkpoints"),
        "learning_rate": 3e-3,
        "max_seq_length": 512,
        "torch_threads": 1,
        "logging_steps": 2,
        "save_steps": 0,
        "max_steps": 4,
    }
    args: list[str] = []
    for key, value in to_sagemaker_strings(hyperparameters).items():
        args += [f"--{key}", value]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("SM_", "SAGEMAKER_", "MLFLOW_", "FT_", "LLM_SFT_")):
                patch.delenv(name)
        patch.setenv("SAGEMAKER_BASE_DIR", str(root))
        try:
            assert main(args) == 0, (root / "output" / "failure").read_text()
        finally:
            torch.set_num_threads(threads)
    return TrainedModel(base=llama3_base, model_dir=root / "model", data=data)


Probe = Callable[[dict[str, Any], Path], dict[str, Any]]


@pytest.fixture(scope="session")
def run_probe(serving_env: Path) -> Probe:
    """Run probe.py in the serving environment; returns its probe.json."""

    def run(spec: dict[str, Any], out: Path) -> dict[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        spec_path = out / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
        }
        env.update(
            PYTHONPATH=str(serving_env),  # first: shadows .venv's transformers 5
            PYTHONNOUSERSITE="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_VERBOSITY="error",
            TOKENIZERS_PARALLELISM="false",
            OMP_NUM_THREADS="1",
        )
        completed = subprocess.run(
            [sys.executable, "-s", str(PROBE), str(spec_path), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if completed.returncode != 0:
            pytest.fail(f"probe failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        return dict(json.loads((out / "probe.json").read_text()))

    return run
