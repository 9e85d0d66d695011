"""The hyperparameter contract: toolkit strings, SM_HPS values and Python values parse alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_sft.hyperparameters import (
    HYPERPARAMETER_NAMES,
    HyperparameterError,
    Hyperparameters,
    hyperparameters_from_sm_hps,
    parse_hyperparameters,
    split_cli_args,
    to_sagemaker_strings,
)

CONTRACT = {
    "model_id", "method", "epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "max_seq_length", "lora_r",
    "lora_alpha", "lora_dropout", "lora_target_modules", "packing", "bf16",
    "gradient_checkpointing", "warmup_ratio", "lr_scheduler_type", "weight_decay",
    "validation_split", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "checkpoint_dir", "seed", "merge_adapter", "trust_remote_code", "torch_threads",
}  # fmt: skip


def test_names_cover_the_contract() -> None:
    assert set(HYPERPARAMETER_NAMES) >= CONTRACT
    assert len(HYPERPARAMETER_NAMES) == len(set(HYPERPARAMETER_NAMES))


def test_defaults() -> None:
    hp = parse_hyperparameters({"model_id": "m"})
    assert hp == Hyperparameters(model_id="m")
    assert (hp.method, hp.epochs, hp.max_steps, hp.learning_rate) == ("lora", 1.0, -1, 2e-4)
    assert hp.per_device_eval_batch_size == hp.per_device_train_batch_size == 4
    assert hp.lora_target_modules == "all-linear"
    assert hp.packing is True
    assert hp.bf16 == "auto"
    assert hp.gradient_checkpointing == "auto"
    assert hp.merge_adapter is True
    assert hp.trust_remote_code is False


def test_toolkit_strings() -> None:
    argv = [
        "--model_id", "org/model",
        "--packing", "False",
        "--merge_adapter", "True",
        "--bf16", "auto",
        "--gradient_checkpointing", "True",
        "--lora_target_modules", "['q_proj', 'v_proj']",
        "--learning_rate", "1e-3",
        "--epochs", "2",
        "--max_steps", "10.0",
        "--per_device_train_batch_size", "8",
    ]  # fmt: skip
    hp = parse_hyperparameters(split_cli_args(argv))
    assert hp.packing is False
    assert hp.merge_adapter is True
    assert hp.bf16 == "auto"
    assert hp.gradient_checkpointing is True
    assert hp.lora_target_modules == ("q_proj", "v_proj")
    assert hp.learning_rate == pytest.approx(1e-3)
    assert hp.epochs == 2.0
    assert hp.max_steps == 10
    assert hp.per_device_eval_batch_size == 8  # defaults to the train batch size


def test_sm_hps_values_are_already_decoded() -> None:
    """The toolkit JSON-decodes what it can: numbers arrive as numbers, `True` stays a string."""
    raw = hyperparameters_from_sm_hps(
        json.dumps({"model_id": "m", "epochs": 3, "packing": "False", "lora_r": 8, "seed": 1})
    )
    hp = parse_hyperparameters(raw)
    assert (hp.epochs, hp.packing, hp.lora_r, hp.seed) == (3.0, False, 8, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all-linear", "all-linear"),
        ("['q_proj', 'v_proj']", ("q_proj", "v_proj")),
        ('["q_proj","k_proj"]', ("q_proj", "k_proj")),
        ("q_proj, o_proj", ("q_proj", "o_proj")),
        (["gate_proj"], ("gate_proj",)),
    ],
)
def test_target_modules_forms(value: object, expected: object) -> None:
    assert (
        parse_hyperparameters({"model_id": "m", "lora_target_modules": value}).lora_target_modules
        == expected
    )


def test_round_trip_through_sagemaker_strings() -> None:
    values = {
        "model_id": "m",
        "packing": False,
        "lora_target_modules": ["q_proj", "v_proj"],
        "learning_rate": 0.001,
        "bf16": "auto",
        "max_steps": 5,
    }
    strings = to_sagemaker_strings(values)
    assert all(isinstance(v, str) for v in strings.values())
    assert strings["packing"] == "False"
    assert strings["lora_target_modules"] == "['q_proj', 'v_proj']"
    argv = [item for key, value in strings.items() for item in (f"--{key}", value)]
    assert parse_hyperparameters(split_cli_args(argv)) == parse_hyperparameters(values)


def test_sagemaker_names_are_ignored() -> None:
    hp = parse_hyperparameters(
        {
            "model_id": "m",
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": "s3://bucket/source.tar.gz",
            "sagemaker_container_log_level": "20",
            "sagemaker_region": "eu-west-1",
            "sagemaker_job_name": "job",
        }
    )
    assert hp.model_id == "m"


def test_unknown_names_are_errors() -> None:
    with pytest.raises(HyperparameterError, match=r"unknown hyperparameter.*learning_rat\b"):
        parse_hyperparameters({"model_id": "m", "learning_rat": "0.1"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("packing", "maybe", "expected True or False"),
        ("bf16", "sometimes", "expected auto, True or False"),
        ("method", "full", "expected one of lora, qlora"),
        ("max_steps", "2.5", "expected an integer"),
        ("learning_rate", "fast", "expected a number"),
        ("lora_target_modules", "[", "cannot parse list"),
        ("lora_target_modules", "[]", "non-empty list"),
        ("validation_split", "1.5", "validation_split"),
        ("lr_scheduler_type", "exotic", "expected one of"),
        ("max_steps", "0", "max_steps"),
    ],
)
def test_bad_values(name: str, value: str, message: str) -> None:
    with pytest.raises(HyperparameterError, match=message):
        parse_hyperparameters({"model_id": "m", name: value})


def test_cli_arg_forms() -> None:
    assert split_cli_args(["--a", "1", "--b=two", "--c-d", "x"]) == {
        "a": "1",
        "b": "two",
        "c_d": "x",
    }
    with pytest.raises(HyperparameterError, match="has no value"):
        split_cli_args(["--a"])
    with pytest.raises(HyperparameterError, match="unexpected command-line argument"):
        split_cli_args(["positional"])


def test_to_dict_is_plain() -> None:
    hp = parse_hyperparameters({"model_id": "m", "lora_target_modules": ["a", "b"]})
    assert json.loads(json.dumps(hp.to_dict()))["lora_target_modules"] == ["a", "b"]


def test_model_id_may_be_left_out_when_a_model_channel_is_given(tmp_path: Path) -> None:
    """The `model` channel wins over model_id (issue 8): a job with only the channel is valid."""
    from llm_sft.modeling import resolve_base_model

    hp = parse_hyperparameters({"max_steps": "3"})
    assert hp.model_id == ""
    channel = tmp_path / "model"
    channel.mkdir()
    (channel / "config.json").write_text("{}")
    base = resolve_base_model(hp.model_id, channel)
    assert base.source == "channel"
    with pytest.raises(Exception, match="no base model"):
        resolve_base_model(hp.model_id, None)
