"""End to end through the real sagemaker-training toolkit, as the training image runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finetune.local_training import LocalTrainingResult, run_training_job_locally
from llm_sft.metrics import METRIC_DEFINITIONS

from .conftest import EXAMPLES, write_jsonl

pytestmark = pytest.mark.slow

DATASET_IDENTITY = {
    "train": {"uri": "s3://datasets/chat/train.jsonl", "version_id": "v-train-1", "etag": "e1"},
    "validation": {"uri": "s3://datasets/chat/validation.jsonl", "version_id": "v-val-1"},
}


@pytest.fixture(scope="module")
def job(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalTrainingResult, str]:
    work = tmp_path_factory.mktemp("job")
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    result = run_training_job_locally(
        work / "opt_ml",
        hyperparameters={
            "model_id": str(tiny_model_dir),
            "epochs": 2,
            "learning_rate": 3e-3,
            "max_seq_length": 256,
            "logging_steps": 4,
            "eval_steps": 25,
            "save_steps": 10,
            "packing": True,
            "merge_adapter": True,
            "lora_target_modules": [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            "torch_threads": 1,
        },
        channels={
            "train": EXAMPLES / "chat" / "train.jsonl",
            "validation": EXAMPLES / "chat" / "validation.jsonl",
        },
        environment={
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": "training-tests",
            "FT_RUN_ID": "run-e2e-001",
            "FT_DATASET_IDENTITY": json.dumps(DATASET_IDENTITY),
        },
        timeout_seconds=300,
    )
    return result, tracking_uri


def _total_steps(result: LocalTrainingResult) -> int:
    """2 epochs of ceil(rows / batch 4) steps, from the row count the job reports."""
    evaluation = result.evaluation()
    assert evaluation is not None
    return 2 * -(-int(evaluation["train_rows"]) // 4)


def test_job_succeeds_as_sagemaker_would_report(job: tuple[LocalTrainingResult, str]) -> None:
    result, _ = job
    assert result.succeeded, result.log[-3000:]
    assert result.failure_reason is None
    assert (result.output_dir / "success").is_file()  # written by the toolkit itself
    hyperparameters = json.loads(
        (result.output_dir.parent / "input" / "config" / "hyperparameters.json").read_text()
    )
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert hyperparameters["packing"] == "True"
    assert hyperparameters["lora_target_modules"].startswith("['q_proj', 'k_proj'")


def test_loss_falls(job: tuple[LocalTrainingResult, str]) -> None:
    result, _ = job
    train = [
        m.values["train_loss"] for m in result.metrics if not m.final and "train_loss" in m.values
    ]
    assert len(train) >= 5
    assert train[-1] < train[0] - 0.5
    final = result.final_metrics
    assert final["eval_loss"] < train[0] - 0.5
    assert final["perplexity"] == pytest.approx(2.718281828 ** final["eval_loss"], rel=1e-4)


def test_metric_definitions_parse_the_real_log(job: tuple[LocalTrainingResult, str]) -> None:
    """Apply every regex to every log line with re.search, as SageMaker does."""
    result, _ = job
    lines = result.log.splitlines()
    found: dict[str, list[float]] = {}
    for definition in METRIC_DEFINITIONS:
        regex = re.compile(definition["Regex"])
        found[definition["Name"]] = [
            float(m.group(1)) for line in lines if (m := regex.search(line)) is not None
        ]
    records = result.metrics
    expected: dict[str, list[float]] = {d["Name"]: [] for d in METRIC_DEFINITIONS}
    for record in records:
        for name, value in record.values.items():
            if name in expected:
                expected[name].append(value)
    assert found == expected
    steps = _total_steps(result)
    # Evaluations every eval_steps=25 before the end, the end-of-training one, the final line,
    # and the evaluation line (llm_sft.evaluation), which restates the run's scored metrics.
    assert len(found["eval_loss"]) == (steps - 1) // 25 + 3
    assert found["eval_loss"][-1] == found["eval_loss"][-2]
    assert len(found["perplexity"]) == 2  # the final line and the evaluation line
    assert all(0 < lr < 3e-3 + 1e-12 for lr in found["learning_rate"])
    assert found["epoch"][-1] == pytest.approx(2.0)
    assert all(t > 0 for t in found["tokens_per_second"])
    # Toolkit and library log lines never produce a value.
    other = [line for line in lines if "METRIC " not in line]
    for definition in METRIC_DEFINITIONS:
        assert not any(re.search(definition["Regex"], line) for line in other)


def test_evaluation_json(job: tuple[LocalTrainingResult, str]) -> None:
    result, _ = job
    evaluation = result.evaluation()
    assert evaluation is not None
    assert evaluation["eval_loss"] == pytest.approx(result.final_metrics["eval_loss"], rel=1e-5)
    assert evaluation["global_step"] == _total_steps(result)
    assert evaluation["train_rows"] < evaluation["train_samples"]  # rows hold several samples
    assert (evaluation["train_samples"], evaluation["eval_samples"]) == (400, 60)
    assert evaluation["train_tokens"] > 0
    assert evaluation["tokens_per_second"] > 0
    assert evaluation["train_runtime_seconds"] > 0
    assert evaluation["truncated_samples"] == 0
    train = evaluation["datasets"]["train"]
    assert len(train["sha256"]) == 64
    assert train["rows"] == 400
    assert train["uri"] == DATASET_IDENTITY["train"]["uri"]
    assert train["version_id"] == "v-train-1"
    assert evaluation["datasets"]["validation"]["rows"] == 60
    assert evaluation["base_model"]["source"] == "local"
    assert evaluation["saved"] == "merged"


def test_checkpoints_were_written(job: tuple[LocalTrainingResult, str]) -> None:
    result, _ = job
    steps = _total_steps(result)
    names = {p.name for p in result.checkpoint_dir.glob("checkpoint-*")}
    # Every save_steps=10 and at the end; save_total_limit=2 keeps the newest two.
    assert names == {f"checkpoint-{steps // 10 * 10}", f"checkpoint-{steps}"}
    assert (result.checkpoint_dir / f"checkpoint-{steps}" / "COMPLETE.json").is_file()
    assert (result.checkpoint_dir / "mlflow_run.json").is_file()  # for a restart to continue


def test_merged_model_reloads_and_generates(job: tuple[LocalTrainingResult, str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = job
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    assert not any(name.startswith("adapter_") for name in files)
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert model.config.use_cache is True
    assert not any("lora" in name for name, _ in model.named_parameters())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy, inside mlflow's store
def test_mlflow_run(job: tuple[LocalTrainingResult, str]) -> None:
    from mlflow.tracking import MlflowClient

    result, tracking_uri = job
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("training-tests")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run: Any = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run-e2e-001"
    assert run.data.tags["run_id"] == "run-e2e-001"
    assert run.data.tags["dataset.train.version_id"] == "v-train-1"
    assert run.data.params["learning_rate"] == "0.003"
    assert run.data.params["method"] == "lora"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    steps = _total_steps(result)
    assert [m.step for m in history] == sorted({*range(4, steps + 1, 4), steps})
    final_line = next(m for m in result.metrics if m.final)  # "METRIC final ..."
    for name, value in final_line.values.items():
        assert run.data.metrics[f"final_{name}"] == pytest.approx(value, rel=1e-4)
    # SageMaker's final metrics: each definition's last value in the log.
    assert result.final_metrics["train_loss"] == final_line.values["train_loss"]
    eval_steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")]
    assert eval_steps == [*range(25, steps, 25), steps]
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "evaluation.json", "dataset_identity.json"} <= artifacts


def test_bad_data_through_the_toolkit(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Our one-paragraph reason, not the toolkit's traceback, becomes the FailureReason."""
    rows: list[Any] = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    train = write_jsonl(tmp_path / "data" / "part-0.jsonl", rows).parent
    result = run_training_job_locally(
        tmp_path / "opt_ml",
        hyperparameters={"model_id": str(tiny_model_dir), "max_steps": 2},
        channels={"train": train},
        timeout_seconds=120,
    )
    assert result.exit_code != 0
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("Data error: ")
    assert "part-0.jsonl:2: conversation has no assistant turn" in result.failure_reason
    assert "Traceback" not in result.failure_reason
    assert not (result.model_dir / "config.json").exists()
