"""The gate: rules per metric and direction, must-beat-best-approved between comparable runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from launch_run.logic import resolve_run
from record_run.gate import (
    BestApproved,
    basis_from_metadata,
    basis_metadata,
    best_approved,
    decide_gate,
)
from record_run.logic import Clients, record_milestone
from runspec.request import Evaluation, RunRequestError, parse_run_request
from runspec.run import ScoringBasis
from tests.lambdas.conftest import Aws

TEST_SET = ScoringBasis(
    dataset="test", data_sha256="a" * 64, tokenizer="t" * 64, generation="greedy max_new_tokens=256"
)


def gate(**evaluation: Any) -> Evaluation:
    return parse_run_request(
        {"evaluation": {"dataset": "s3://bkt/test.jsonl", **evaluation}}
    ).evaluation


@pytest.mark.parametrize(
    ("rules", "metrics", "passed", "reason"),
    [
        (["exact_match >= 0.6"], {"exact_match": 0.6}, True, "exact_match 0.6 passed the gate"),
        (["exact_match >= 0.6"], {"exact_match": 0.59}, False, "below the threshold 0.6"),
        (["exact_match > 0.6"], {"exact_match": 0.6}, False, "below the threshold 0.6"),
        (["eval_loss <= 1.2"], {"eval_loss": 1.2}, True, "passed"),
        (["eval_loss <= 1.2"], {"eval_loss": 1.21}, False, "above the threshold 1.2"),
        (["eval_loss < 1.2"], {"eval_loss": 1.2}, False, "above the threshold"),
        (["rougeL >= 0.3"], {}, False, "reported no rougeL"),
        (["token_f1 >= 0.5"], {"token_f1": 0.5}, True, "token_f1 0.5 passed"),
        (
            ["exact_match >= 0.6", "eval_loss <= 1.2"],
            {"exact_match": 0.7, "eval_loss": 1.5},
            False,
            "eval_loss 1.5 is above the threshold 1.2 (eval_loss <= 1.2)",
        ),
        (
            ["exact_match >= 0.6", "eval_loss <= 1.2"],
            {"exact_match": 0.7, "eval_loss": 1.1},
            True,
            "exact_match 0.7, eval_loss 1.1 passed the gate",
        ),
    ],
)
def test_every_rule_holds_in_its_metric_s_direction(
    rules: list[str], metrics: dict[str, float], passed: bool, reason: str
) -> None:
    decision = decide_gate(gate(gate={"rules": rules}), metrics)
    assert decision.passed is passed
    assert reason in decision.reason
    assert [r.metric for r in decision.rules] == [r.split()[0] for r in rules]


@pytest.mark.parametrize(
    ("metric", "value", "best", "passed"),
    [
        ("exact_match", 0.71, 0.7, True),  # higher is better
        ("exact_match", 0.7, 0.7, False),  # strictly better
        ("exact_match", 0.5, 0.7, False),
        ("eval_loss", 1.0, 1.1, True),  # lower is better
        ("eval_loss", 1.2, 1.1, False),
        ("exact_match", 0.1, None, True),  # nothing comparable to beat
    ],
)
def test_must_beat_best_approved_in_the_metric_s_direction(
    metric: str, value: float, best: float | None, passed: bool
) -> None:
    evaluation = gate(gate={"must_beat_best_approved": [metric]})
    found = {metric: BestApproved(best, "arn:package/1" if best else None, not_comparable=2)}
    decision = decide_gate(evaluation, {metric: value}, best=found)
    assert decision.passed is passed, decision.reason
    assert decision.best_approved[0].not_comparable == 2
    if best is None:
        assert "no comparable approved model to beat; 2 approved scored on another basis" in (
            decision.reason
        )


def test_the_shorthand_of_schema_version_1_is_one_rule_in_the_metric_s_direction() -> None:
    assert [str(r) for r in Evaluation(threshold=1.2).gate_rules()] == ["eval_loss <= 1.2"]
    shorthand = parse_run_request(
        {"evaluation": {"dataset": "s3://bkt/t.jsonl", "metric": "exact_match", "threshold": 0.6}}
    ).evaluation
    assert [str(r) for r in shorthand.gate_rules()] == ["exact_match >= 0.6"]
    assert decide_gate(shorthand, {"exact_match": 0.5}).passed is False


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"gate": {"rules": ["exact_match <= 0.6"]}}, "exact_match is better higher"),
        ({"gate": {"rules": ["eval_loss >= 1"]}}, "eval_loss is better lower"),
        ({"gate": {"rules": ["accuracy >= 1"]}}, "'accuracy' is not one of"),
        ({"gate": {"rules": ["exact_match >= high"]}}, "is not a rule like"),
        ({"gate": {"rules": ["eval_loss <= 1", "eval_loss <= 2"]}}, "more than one rule"),
        ({"threshold": 1.0, "gate": {"rules": []}}, "not both"),
        ({"generation": {"temperature": 0.7}}, "sampling only"),
    ],
)
def test_bad_gates_are_named(evaluation: dict[str, Any], message: str) -> None:
    with pytest.raises(RunRequestError, match=message):
        gate(**evaluation)


def test_task_metrics_need_a_test_set() -> None:
    with pytest.raises(RunRequestError, match=r"give a test set in evaluation\.dataset"):
        parse_run_request({"evaluation": {"gate": {"rules": ["exact_match >= 0.6"]}}})


def test_bases_compare_data_always_tokenizer_for_losses_generation_for_answers() -> None:
    other_tokenizer = TEST_SET.model_copy(update={"tokenizer": "u" * 64})
    other_data = TEST_SET.model_copy(update={"data_sha256": "b" * 64})
    longer = TEST_SET.model_copy(update={"generation": "greedy max_new_tokens=512"})
    assert TEST_SET.comparable(other_tokenizer, "exact_match")
    assert not TEST_SET.comparable(other_tokenizer, "eval_loss")
    assert not TEST_SET.comparable(other_data, "exact_match")
    assert TEST_SET.comparable(longer, "perplexity")
    assert not TEST_SET.comparable(longer, "rougeL")
    assert basis_from_metadata(basis_metadata(TEST_SET)) == TEST_SET
    assert basis_from_metadata({"eval_loss": "1.0"}) is None


def test_a_package_scored_on_another_test_set_is_not_compared(aws: Aws) -> None:
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName="g")
    other = TEST_SET.model_copy(update={"data_sha256": "b" * 64})
    for basis, score in ((TEST_SET, "0.6"), (other, "0.9"), (None, "0.95")):
        sagemaker.create_model_package(
            ModelPackageGroupName="g",
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={"exact_match": score, **basis_metadata(basis)},
        )
    found = best_approved(sagemaker, "g", ["exact_match"], TEST_SET)["exact_match"]
    assert (found.value, found.not_comparable) == (0.6, 2)
    assert found.package is not None
    assert found.package.endswith("/1")
    decision = decide_gate(
        gate(gate={"must_beat_best_approved": ["exact_match"]}),
        {"exact_match": 0.7},
        best={"exact_match": found},
    )
    assert decision.passed  # beats 0.6 on the same test set; 0.9 was another test set


def test_trained_reads_the_job_s_summary_and_records_what_it_scored_on(aws: Aws) -> None:
    aws.put("evaluation/test.jsonl", '{"prompt": "2+2", "completion": "4"}\n')
    request = {
        "evaluation": {
            "dataset": f"s3://{aws.settings.datasets_bucket}/evaluation/test.jsonl",
            "gate": {"rules": ["exact_match >= 0.5"], "must_beat_best_approved": ["exact_match"]},
        }
    }
    run = resolve_run(
        request, aws.settings, execution_name=None, s3=aws.client("s3"), ecr=aws.client("ecr")
    )
    assert run.datasets["test"].uri.endswith("evaluation/test.jsonl")
    assert run.training.input_data_config[-1]["ChannelName"] == "test"
    clients = Clients(sagemaker=aws.client("sagemaker"), s3=aws.client("s3"))
    record_milestone(
        clients,
        artifacts_bucket=aws.settings.artifacts_bucket,
        milestone="started",
        run=run,
        details={},
    )
    from tests.lambdas.test_record_run import create_job

    create_job(aws, run, {"eval_loss": 1.5, "exact_match": 0.4})
    model = f"s3://{aws.settings.artifacts_bucket}/models/{run.run_id}/job/output/model/"
    summary = {
        "scored_on": "test",
        "data": {"sha256": "c" * 64, "rows": 1, "version_id": "v1"},
        "tokenizer": {"sha256": "d" * 64, "class": "PreTrainedTokenizerFast"},
        "generation": "greedy max_new_tokens=256",
        "metrics": {"eval_loss": 1.4567891234, "exact_match": 0.75},
        "mlflow_run_id": "abc123",
    }
    aws.put(
        f"models/{run.run_id}/job/output/model/evaluation_summary.json",
        json.dumps(summary),
        bucket=aws.settings.artifacts_bucket,
    )
    result = record_milestone(
        clients,
        artifacts_bucket=aws.settings.artifacts_bucket,
        milestone="trained",
        run=run,
        details={"training": {"model_artifacts": model}},
    )
    assert result["metrics"]["exact_match"] == 0.75  # the job's exact figure wins
    assert result["metrics"]["eval_loss"] == 1.4567891234
    assert result["evaluation"]["passed"] is True
    assert result["scoring"]["data_sha256"] == "c" * 64
    assert result["test_set"]["version_id"] == run.datasets["test"].objects[0].version_id
    assert result["mlflow_run_id"] == "abc123"
    metadata = result["package_metadata"]
    assert metadata["exact_match"] == "0.75"
    assert metadata["scored_data_sha256"] == "c" * 64
    assert metadata["scored_generation"] == "greedy max_new_tokens=256"


def test_a_resolved_evaluation_validates_again_with_its_defaults_written_out() -> None:
    evaluation = gate(gate={"rules": ["token_f1 >= 0.5"]})
    assert Evaluation.model_validate(evaluation.model_dump(mode="json")) == evaluation
