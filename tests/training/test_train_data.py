"""Bad data fails fast with the file and line; good data loads with its identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_sft.data import load_channel, split_validation
from llm_sft.errors import DataError

from .conftest import RunMain, write_jsonl

GOOD_CHAT = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
}

BAD_LINES = [
    ("{not json", "train.jsonl:2: malformed JSON"),
    (json.dumps({"text": "hello"}), "train.jsonl:2: missing field: expected 'messages'"),
    (json.dumps({"prompt": "p"}), "train.jsonl:2: missing field 'completion'"),
    (
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        "train.jsonl:2: messages[0] has unknown role 'robot'",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        "train.jsonl:2: conversation has no assistant turn",
    ),
    (
        json.dumps(
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}
        ),
        "train.jsonl:2: messages[0] content must be a string, got int",
    ),
    (
        json.dumps({"messages": [{"role": "user"}]}),
        "train.jsonl:2: messages[0] is missing field 'content'",
    ),
    (json.dumps([1, 2]), "train.jsonl:2: expected a JSON object, got list"),
    (json.dumps({"prompt": "p", "completion": 3}), "train.jsonl:2: 'completion' must be a string"),
]


def _channel(tmp_path: Path, second_line: str) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(GOOD_CHAT) + "\n" + second_line + "\n")
    return folder


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(DataError) as caught:
        load_channel("train", _channel(tmp_path, line))
    assert message in str(caught.value)


def test_empty_file_and_empty_channel(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match=r"a/train.jsonl: file is empty"):
        load_channel("train", tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(
        DataError, match=r"channel .train.: no .jsonl files .*\(the folder is empty\)"
    ):
        load_channel("train", tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data.csv").write_text("x")
    with pytest.raises(DataError, match=r"found: data.csv"):
        load_channel("train", tmp_path / "c")
    with pytest.raises(DataError, match="does not exist"):
        load_channel("train", tmp_path / "missing")


def test_channel_identity_and_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "ch" / "b.jsonl", [GOOD_CHAT])
    write_jsonl(tmp_path / "ch" / "sub" / "a.jsonl", [{"prompt": "p", "completion": "c"}] * 2)
    (tmp_path / "ch" / "README.txt").write_text("ignored")
    channel = load_channel("train", tmp_path / "ch")
    assert channel.rows == 3
    assert sorted(channel.file_sha256) == ["b.jsonl", "sub/a.jsonl"]
    assert len(channel.sha256) == 64
    assert channel.identity()["rows"] == 3
    again = load_channel("train", tmp_path / "ch")
    assert again.sha256 == channel.sha256
    (tmp_path / "ch" / "b.jsonl").write_text(json.dumps(GOOD_CHAT) + "\n" + json.dumps(GOOD_CHAT))
    assert load_channel("train", tmp_path / "ch").sha256 != channel.sha256


def test_a_single_file_is_a_channel(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "only.jsonl", [GOOD_CHAT] * 3)
    channel = load_channel("train", path)
    assert channel.rows == 3
    assert list(channel.file_sha256) == ["only.jsonl"]


def test_split_is_deterministic(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t" / "t.jsonl", [GOOD_CHAT] * 50)
    examples = load_channel("train", tmp_path / "t").examples
    train, validation = split_validation(examples, 0.1, seed=1)
    assert (len(train), len(validation)) == (45, 5)
    assert split_validation(examples, 0.1, seed=1) == (train, validation)
    assert split_validation(examples, 0.0, seed=1) == (list(examples), [])


@pytest.mark.parametrize(("line", "message"), BAD_LINES[:4])
def test_cli_reports_bad_data(run_main: RunMain, tmp_path: Path, line: str, message: str) -> None:
    run = run_main({"train_dir": str(_channel(tmp_path, line))})
    assert run.exit_code == 1
    assert run.failure is not None
    assert run.failure.startswith("Data error: ")
    assert message in run.failure
    assert "Traceback" not in run.failure
    assert len(run.failure.encode()) < 1024
    assert not (run.model_dir / "config.json").exists()


def test_cli_reports_empty_channel(run_main: RunMain, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = run_main({"train_dir": str(tmp_path / "empty")})
    assert run.exit_code == 1
    assert run.failure is not None
    assert "channel 'train': no .jsonl files" in run.failure
