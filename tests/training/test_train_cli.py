"""The entry point in-process: configurations, failures and what lands in the model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_sft.metrics import parse_metric_lines

from .conftest import EXAMPLES, RunMain, read_rows, write_jsonl


def test_invalid_hyperparameters_exit_2(run_main: RunMain, chat_subset: Path) -> None:
    run = run_main({"train_dir": str(chat_subset / "train"), "lora_rank": "8"})
    assert run.exit_code == 2
    assert run.failure is not None
    assert run.failure.startswith("Invalid hyperparameters: unknown hyperparameter(s): lora_rank.")


def test_qlora_on_cpu_is_a_clear_error(run_main: RunMain, chat_subset: Path) -> None:
    run = run_main({"train_dir": str(chat_subset / "train"), "method": "qlora"})
    assert run.exit_code == 1
    assert run.failure is not None
    assert run.failure.startswith("Configuration error: method=qlora needs a CUDA GPU")


def test_missing_model_folder(run_main: RunMain, chat_subset: Path, tmp_path: Path) -> None:
    run = run_main({"train_dir": str(chat_subset / "train"), "model_id": str(tmp_path / "nope")})
    assert run.exit_code == 1
    assert run.failure is not None
    assert "Model error: model_id" in run.failure
    assert "no such folder" in run.failure


def test_several_instances_without_torchrun_are_refused(
    run_main: RunMain, chat_subset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    run = run_main({"train_dir": str(chat_subset / "train")})
    assert run.exit_code == 1
    assert run.failure is not None
    assert "the job has 2 instances but was not started by torchrun" in run.failure
    assert "sagemaker_torch_distributed_enabled=true" in run.failure


@pytest.mark.slow
def test_prompt_completion_with_split_validation(run_main: RunMain, tmp_path: Path) -> None:
    rows = read_rows(EXAMPLES / "prompt_completion" / "train.jsonl", 80)
    train = write_jsonl(tmp_path / "pc" / "train.jsonl", rows).parent
    run = run_main({"train_dir": str(train), "validation_split": 0.25, "packing": False})
    assert run.exit_code == 0, run.output
    evaluation = run.evaluation
    assert (evaluation["train_samples"], evaluation["eval_samples"]) == (60, 20)
    assert evaluation["packing"] is False
    assert evaluation["datasets"]["validation"]["source"].startswith("split 0.25")
    steps = [m for m in parse_metric_lines(run.output.splitlines()) if not m.final]
    assert [m.step for m in steps if "train_loss" in m.values] == [2, 4, 6]


@pytest.mark.slow
def test_adapter_only_from_a_model_channel(
    run_main: RunMain, chat_subset: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staged model channel wins over model_id; the adapter names the base by model_id."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(chat_subset / "train"))
    monkeypatch.setenv("SM_CHANNEL_MODEL", str(tiny_model_dir))
    run = run_main(
        {
            "model_id": "example-org/tiny-llama",
            "merge_adapter": False,
            "lora_target_modules": ["q_proj", "v_proj"],
        }
    )
    assert run.exit_code == 0, run.output
    files = sorted(p.name for p in run.model_dir.iterdir())
    assert "adapter_model.safetensors" in files
    assert "tokenizer.json" in files
    assert "model.safetensors" not in files
    adapter_config = json.loads((run.model_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "example-org/tiny-llama"
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}
    assert run.evaluation["base_model"]["source"] == "channel"
    # The adapter applies to the base given explicitly (its config names a hub id we lack).
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, run.model_dir)
