"""The evaluation after training: a tiny model trained, then scored on a test channel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_sft.evaluation import EXAMPLES_FILE, SUMMARY_FILE, EvaluationSettings
from llm_sft.metrics import METRIC_DEFINITIONS, apply_metric_definitions
from tests.training.conftest import EXAMPLES, RunMain, read_rows, write_jsonl


def test_a_job_with_a_test_channel_scores_the_saved_model_on_it(
    run_main: RunMain, chat_subset: Path, sm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = sm_env / "input" / "data"
    for name in ("train", "validation"):
        write_jsonl(
            channels / name / f"{name}.jsonl", read_rows(chat_subset / name / f"{name}.jsonl", 200)
        )
    rows = read_rows(EXAMPLES / "chat" / "validation.jsonl", 10)
    rows.append({"prompt": "Give JSON.", "completion": '{"ok": true}'})
    write_jsonl(channels / "test" / "test.jsonl", rows)
    config = {
        "metrics": ["eval_loss", "perplexity", "exact_match", "token_f1", "rougeL", "json_valid"],
        "generation": {"max_new_tokens": 6, "batch_size": 4},
    }
    monkeypatch.setenv("FT_EVALUATION", json.dumps(config))
    monkeypatch.setenv(
        "FT_DATASET_IDENTITY",
        json.dumps({"test": {"uri": "s3://bkt/test.jsonl", "version_id": "v7"}}),
    )

    run = run_main({"max_steps": 4})

    assert run.exit_code == 0, run.failure
    summary = json.loads((run.model_dir / SUMMARY_FILE).read_text())
    assert summary["scored_on"] == "test"
    assert summary["data"]["rows"] == 11
    assert summary["data"]["version_id"] == "v7"
    assert len(summary["data"]["sha256"]) == 64
    assert len(summary["tokenizer"]["sha256"]) == 64
    assert summary["generation"] == "greedy max_new_tokens=6"
    metrics: dict[str, Any] = summary["metrics"]
    assert set(metrics) == set(config["metrics"])
    for name in ("exact_match", "token_f1", "rougeL", "json_valid"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    assert summary["libraries"]["rouge-score"] == "0.1.2"
    examples = (run.base / "output" / "data" / EXAMPLES_FILE).read_text().splitlines()
    assert len(examples) == 11
    first = json.loads(examples[0])
    assert set(first) >= {"source", "prompt", "reference", "prediction", "exact_match"}
    assert first["reference"] == rows[0]["messages"][-1]["content"]
    # The last METRIC line is the evaluation's, and SageMaker's regexes read its values.
    captured = apply_metric_definitions(run.output.splitlines(), METRIC_DEFINITIONS)
    assert captured["exact_match"][-1] == pytest.approx(metrics["exact_match"], abs=1e-5)
    assert captured["eval_loss"][-1] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert run.evaluation["scored"]["metrics"] == metrics


def test_settings_come_from_the_request_s_job_config() -> None:
    from runspec.request import parse_run_request

    request = parse_run_request(
        {
            "evaluation": {
                "dataset": "s3://bkt/test/",
                "metrics": ["exact_match", "judge_score"],
                "generation": {"max_new_tokens": 32},
                "judge": {"model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"},
            }
        }
    )
    settings = EvaluationSettings.from_env({"FT_EVALUATION": request.evaluation.job_config()})
    assert settings.metrics == ("exact_match", "judge_score")
    assert settings.generation.describe() == request.evaluation.generation.describe()
    assert settings.judge is not None
    assert settings.judge.max_examples == 200
    assert EvaluationSettings.from_env({}).metrics[:2] == ("eval_loss", "perplexity")
