"""The CLI's input handling and estimates: fast, no platform needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "runs"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def estimate(
    tmp_path: Path, request: dict[str, Any], *options: str, exit_code: int = 0
) -> dict[str, Any]:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(request))
    result = invoke("estimate", str(path), "--json", *options)
    assert result.exit_code == exit_code, result.output
    return dict(json.loads(result.stdout))


def test_help_everywhere() -> None:
    assert invoke("--help").exit_code == 0
    for command in ("estimate", "launch", "watch", "runs", "compare", "promote", "demo"):
        result = invoke(command, "--help")
        assert result.exit_code == 0, command
        assert "--json" in result.stdout or command == "demo"


@pytest.mark.parametrize(
    ("request_", "instance", "fits"),
    [
        # 8B LoRA fits one 24 GB A10G at sequence 2048, micro-batch 1.
        (
            {
                "base_model": "meta-llama/Llama-3.1-8B",
                "hyperparameters": {"max_seq_length": 2048, "per_device_train_batch_size": 1},
            },
            "ml.g5.2xlarge",
            True,
        ),
        # 70B QLoRA does not fit a 24 GB GPU ...
        (
            {
                "base_model": "meta-llama/Llama-3.1-70B",
                "hyperparameters": {
                    "method": "qlora",
                    "max_seq_length": 1024,
                    "per_device_train_batch_size": 1,
                },
            },
            "ml.g5.2xlarge",
            False,
        ),
    ],
)
def test_estimate_known_cases(
    tmp_path: Path, request_: dict[str, Any], instance: str, fits: bool
) -> None:
    # A run that does not fit is one the platform refuses: the estimate says so with exit 2.
    result = estimate(
        tmp_path, {**request_, "training": {"instance_type": instance}}, exit_code=0 if fits else 2
    )
    assert result["requested"]["fit"]["fits"] is fits


def test_70b_qlora_needs_at_least_48_gb(tmp_path: Path) -> None:
    result = estimate(
        tmp_path,
        exit_code=2,
        request={
            "base_model": "meta-llama/Llama-3.1-70B",
            "training": {"instance_type": "ml.g5.2xlarge"},
            "hyperparameters": {
                "method": "qlora",
                "max_seq_length": 1024,
                "per_device_train_batch_size": 1,
            },
        },
    )
    recommended = result["recommended"]["fit"]
    assert recommended["fits"] is True
    assert recommended["gpu_memory_gib"] >= 48


def test_estimate_prices_on_demand_and_spot_and_counts_tokens(tmp_path: Path) -> None:
    result = estimate(
        tmp_path,
        {"hyperparameters": {"max_steps": 100, "per_device_train_batch_size": 2}},
        "--region",
        "eu-west-1",
    )
    assert result["tokens"] == 100 * 2 * 1024
    requested = result["requested"]
    assert requested["on_demand"]["total_usd"] > requested["spot"]["total_usd"] > 0
    assert result["region"] == "eu-west-1"


def test_estimate_counts_a_local_dataset(tmp_path: Path) -> None:
    dataset = Path(__file__).resolve().parents[2] / "examples/data/chat/train.jsonl"
    result = estimate(tmp_path, {}, "--dataset", str(dataset))
    assert 10_000 < result["tokens"] < 200_000
    assert "train.jsonl" in result["tokens_basis"]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("training: [unclosed", ".yaml", "run.yaml:1: not valid YAML"),
        ("{not json", ".json", "run.json:1: not valid JSON"),
        ("trainng: {}\n", ".yaml", "trainng: unknown field"),
        ("training:\n  instance_type: gpu\n", ".yaml", "training.instance_type: 'gpu' is not"),
        ("- a\n- b\n", ".yaml", "(request): must be a JSON object, got list"),
    ],
)
def test_bad_run_files_are_one_clear_line_and_exit_2(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"run{suffix}"
    path.write_text(content)
    for command in ("estimate", "launch"):
        result = invoke("--local", "--state-dir", str(tmp_path / "state"), command, str(path))
        assert result.exit_code == 2, result.output
        first, *rest = result.stderr.strip().splitlines()
        assert first.startswith("error: ")
        assert message in first
        assert all(line.startswith("hint: ") for line in rest)
        assert "Traceback" not in result.output


def test_missing_run_file(tmp_path: Path) -> None:
    result = invoke("estimate", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "absent.yaml: No such file or directory" in result.stderr


def test_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--aws", "--env", "staging", "runs")
    assert result.exit_code == 2
    assert "unknown environment 'staging'" in result.stderr


def test_local_commands_on_an_empty_platform(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    result = invoke("--local", "--state-dir", state, "runs", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    result = invoke("--local", "--state-dir", state, "watch", "nope")
    assert result.exit_code == 2
    assert "no run 'nope' on the local platform" in result.stderr
    result = invoke("--local", "--state-dir", state, "compare", "only-one")
    assert result.exit_code == 2


# -- malformed run files: exit 2, the file and the field named, never a traceback -------------


def _first_error_line(result: Any) -> str:
    assert "Traceback" not in result.output
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error: ")
    assert all(line.startswith(("hint: ", "warning: ")) for line in rest), result.stderr
    return str(first)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("binary.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text file (byte 0x89"),
        ("nul.yaml", b"run_name: a\x00b\n", "not a text file (NUL byte"),
        ("deep.json", b"[" * 10_000 + b"]" * 10_000, "nested more than 8 levels deep"),
        ("deep.yaml", b"a: " + b"[" * 10_000 + b"]" * 10_000, "nested more than 8 levels"),
        ("deep2.yaml", b"a:\n" + b"".join(b" " * i + b"- \n" for i in range(1, 40)), "nested"),
        (
            "laughs.yaml",
            b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
            b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            b"e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
            "holds more than 10,000 values",
        ),
        ("huge.yaml", b"run_name: " + b"x" * 10_000_000, "larger than 256 KiB"),
        ("twice.yaml", b"run_name: a\nrun_name: b\n", "run_name: given twice (line 2)"),
        ("twice.json", b'{"training": {"spot": true, "spot": false}}', "spot: given twice"),
        ("number.yaml", b"hyperparameters:\n  lora_r: " + b"9" * 5000, "not valid YAML"),
        ("spot.yaml", b"training:\n  spot: 'no'\n", "training.spot: Input should be a valid"),
        ("lora.yaml", b"hyperparameters:\n  lora_r: 8.0\n", "hyperparameters.lora_r: Input"),
        ("truth.json", b'{"hyperparameters": {"lora_r": true}}', "lora_r: Input should be"),
    ],
)
def test_malformed_run_files_exit_2_naming_the_file(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for command in ("estimate", "launch"):
        result = invoke("--local", "--state-dir", str(tmp_path / "state"), command, str(path))
        assert result.exit_code == 2, result.output
        first = _first_error_line(result)
        assert first.startswith(f"error: {path}")
        assert message in first
        assert len(first) < 1000
    assert not (tmp_path / "state").exists()


def test_a_long_value_is_elided_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"tags:\n  team: '{'v' * 200_000}'\n")
    result = invoke("estimate", str(path))
    assert result.exit_code == 2
    first = _first_error_line(result)
    assert "tags: tag value 'vvv" in first
    assert "characters elided" in first
    assert len(first) < 600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("run_name: '[/]'\n", "run_name: '[/]' must be letters"),
        ("run_name: '[bold]x[/bold]'\n", "run_name: '[bold]x[/bold]' must be"),
        ("tags:\n  '[/]': x\n", "tag key '[/]' is invalid"),
        ("base_model: 's3://[red]/x/'\n", "base_model: 's3://[red]/x/'"),
    ],
)
def test_user_text_is_printed_as_text_not_markup(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "[bold]" / "run[red].yaml"
    path.parent.mkdir()
    path.write_text(content)
    result = invoke("estimate", str(path))
    assert result.exit_code == 2, result.output
    first = _first_error_line(result)
    assert f"{path}: " in first
    assert message in first


def test_a_missing_file_with_brackets_in_its_name(tmp_path: Path) -> None:
    result = invoke("launch", str(tmp_path / "[/]run.yaml"))
    assert result.exit_code == 2
    assert "[/]run.yaml: No such file or directory" in _first_error_line(result)


@pytest.mark.parametrize("run_id", ["demo-lr-3e-?", "demo-*", "[/]", "a" * 65, "x/../y", ""])
@pytest.mark.parametrize("command", ["watch", "promote", "compare"])
def test_run_ids_are_exact_never_patterns(tmp_path: Path, command: str, run_id: str) -> None:
    args = [command, run_id, *(["other"] if command == "compare" else [])]
    result = invoke("--local", "--state-dir", str(tmp_path / "state"), *args)
    assert result.exit_code == 2, result.output
    assert "is not a run id" in _first_error_line(result)
    assert not (tmp_path / "state").exists()


def test_tokens_must_be_positive_and_blame_tokens(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("{}")
    result = invoke("estimate", str(path), "--tokens", "-5")
    assert result.exit_code == 2
    assert "--tokens" in result.output
    assert "model_parameters_billions" not in result.output


def test_estimate_of_a_run_that_does_not_fit_exits_2_with_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "base_model: meta-llama/Llama-3.1-70B\ntraining:\n  instance_type: ml.g5.2xlarge\n"
    )
    result = invoke("estimate", str(path))
    assert result.exit_code == 2
    assert "does not fit" in result.stdout  # the estimate itself is still printed
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error
    assert "training.instance_type: 'ml.g5.2xlarge' has 1×24 GiB GPU" in error[0]
    assert "hint: ml." in result.stderr


def test_a_failed_runs_cause_is_shown_in_full_and_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from finetune.backends.base import ExecutionOutcome
    from finetune.cli import _console, _describe_outcome

    cause = "[/] " + "x" * 2000 + " (train.jsonl:7: messages[1] is a user turn after a user turn)"
    outcome = ExecutionOutcome(
        run_id="r[/]", execution_name="r", status="FAILED", error="States.TaskFailed", cause=cause
    )
    _describe_outcome(_console(stderr=False), outcome)
    printed = capsys.readouterr().out.replace("\n", "")
    assert "run r[/]: FAILED" in printed
    assert cause in printed


# -- chat role order: the training code's rule, checked at launch where the data is local ------


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (
            ["assistant", "user", "assistant"],
            "messages[0] is a assistant turn first, expected user",
        ),
        (["user", "system", "assistant"], "messages[1] is a system turn after a user turn"),
        (["system", "system", "user", "assistant"], "messages[1] is a system turn after a system"),
        (["user", "user", "assistant"], "messages[1] is a user turn after a user turn"),
        (["user", "assistant", "user"], "messages[2] is a user turn at the end"),
        (["user", "assistant", "assistant"], "messages[2] is a assistant turn after a assistant"),
    ],
)
def test_chat_roles_out_of_order_are_refused(
    tmp_path: Path, roles: list[str], message: str
) -> None:
    from llm_sft.data import load_channel
    from llm_sft.errors import DataError

    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": role, "content": "x"} for role in roles]}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as raised:
        load_channel("train", tmp_path)
    assert f"train.jsonl:2: {message}" in str(raised.value)
    assert "optional system turn" in str(raised.value)


def test_good_role_orders_load(tmp_path: Path) -> None:
    from llm_sft.data import load_channel

    rows = [
        ["user", "assistant"],
        ["system", "user", "assistant"],
        ["system", "user", "assistant", "user", "assistant"],
    ]
    lines = [
        json.dumps({"messages": [{"role": r, "content": "x"} for r in roles]}) for roles in rows
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert load_channel("train", tmp_path).rows == 3


def test_launch_refuses_local_data_with_roles_out_of_order(tmp_path: Path) -> None:
    """On the local platform the data is at hand: bad rows are exit 2 before anything starts."""
    from types import SimpleNamespace

    import boto3
    from moto import mock_aws

    from finetune.errors import CliError
    from finetune.local.session import check_local_data

    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="datasets")
        s3.put_object(Bucket="datasets", Key="chat/ok.jsonl", Body=json.dumps(good).encode())
        s3.put_object(
            Bucket="datasets",
            Key="chat/bad.jsonl",
            Body=(json.dumps(good) + "\n" + json.dumps(bad) + "\n").encode(),
        )
        local = SimpleNamespace(
            platform=SimpleNamespace(datasets_bucket="datasets"), client=lambda _: s3
        )
        check_local_data(local, {"dataset": {"train": "s3://datasets/chat/ok.jsonl"}})  # type: ignore[arg-type]
        with pytest.raises(CliError) as raised:
            check_local_data(local, {"dataset": {"train": "s3://datasets/chat/bad.jsonl"}})  # type: ignore[arg-type]
    assert raised.value.exit_code == 2
    assert raised.value.message.startswith(
        "dataset.train: s3://datasets/chat/bad.jsonl:2: messages[0] is a assistant turn first"
    )


def test_a_request_the_platform_refuses_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_file = tmp_path / "run.yaml"
    run_file.write_text("base_model: meta-llama/Llama-3.1-8B\n")
    result = invoke("--local", "--state-dir", str(state), "launch", str(run_file))
    assert result.exit_code == 2, result.output
    assert "has no internet egress" in _first_error_line(result)
    assert not state.exists() or list(state.rglob("*")) == []
