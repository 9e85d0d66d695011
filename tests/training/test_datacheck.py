"""The data rules (llm_sft.datacheck): each error class on a small file, the warnings, and the
streaming reader giving the same answer however the bytes arrive."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from llm_sft import datacheck
from llm_sft.data import load_channel
from llm_sft.datacheck import JsonlCheck, RowIndex, TokenStats, check_chunks
from llm_sft.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
GOOD = json.dumps(CHAT).encode()


def first_error(data: bytes) -> str:
    report = check_chunks("t.jsonl", [data])
    assert report.errors, report
    return report.errors[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe{}", "t.jsonl:2: not valid UTF-8 (byte 0xff at byte 1 of the line)"),
        (b'{"messages": [1, 2', "t.jsonl:2: malformed JSON (Expecting ',' delimiter"),
        (b"[" * 100_000 + b"]" * 100_000, "t.jsonl:2: malformed JSON (nested too deeply)"),
        (b'{"prompt": "p", "completion": ' + b"9" * 5000 + b"}", "t.jsonl:2: malformed JSON ("),
        (b"[1, 2]", "t.jsonl:2: expected a JSON object, got list"),
        (b'{"text": "x"}', "t.jsonl:2: missing field: expected 'messages', or 'prompt'"),
        (b'{"prompt": "p"}', "t.jsonl:2: missing field 'completion'"),
        (b'{"prompt": "p", "completion": 3}', "t.jsonl:2: 'completion' must be a string"),
        (b'{"prompt": "p", "completion": " "}', "t.jsonl:2: 'completion' is empty"),
        (
            b'{"messages": [], "prompt": "p", "completion": "c"}',
            "t.jsonl:2: row has both 'messages' and 'prompt'/'completion'",
        ),
        (b'{"messages": []}', "t.jsonl:2: 'messages' must be a non-empty list"),
        (b'{"messages": ["hi"]}', "t.jsonl:2: messages[0] must be an object"),
        (b'{"messages": [{"role": "user"}]}', "t.jsonl:2: messages[0] is missing field 'content'"),
        (
            b'{"messages": [{"role": "robot", "content": "x"}]}',
            "t.jsonl:2: messages[0] has unknown role 'robot'",
        ),
        (
            b'{"messages": [{"role": "user", "content": ["x"]}]}',
            "t.jsonl:2: messages[0] content must be a string, got list",
        ),
        (
            b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
            b'"content": " "}]}',
            "t.jsonl:2: messages[1] is an assistant turn with empty content",
        ),
        (
            b'{"messages": [{"role": "user", "content": "q"}]}',
            "t.jsonl:2: conversation has no assistant turn",
        ),
        (
            b'{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", '
            b'"content": "q"}, {"role": "assistant", "content": "a"}]}',
            "t.jsonl:2: messages[0] is a assistant turn first, expected user; a conversation is",
        ),
        (
            b'{"messages": [{"role": "user", "content": "q \\ud800"}, {"role": "assistant", '
            b'"content": "a"}]}',
            "t.jsonl:2: messages[0] content holds an unpaired UTF-16 surrogate (\\ud800",
        ),
    ],
)
def test_each_error_names_file_line_and_rule(line: bytes, message: str) -> None:
    assert first_error(GOOD + b"\n" + line + b"\n").startswith(message)


def test_a_file_without_rows_is_an_error() -> None:
    assert first_error(b"\n  \n\r\n") == "t.jsonl: file is empty (no JSON lines)"
    assert first_error(b"") == "t.jsonl: file is empty (no JSON lines)"


def test_a_line_longer_than_the_limit_is_refused_and_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datacheck, "MAX_LINE_BYTES", 100)
    data = GOOD + b"\n" + b'{"prompt": "' + b"x" * 200 + b'", "completion": "c"}\n' + GOOD + b"\n{"
    for size in (1, 7, 50, len(data)):
        report = check_chunks("t.jsonl", [data[i : i + size] for i in range(0, len(data), size)])
        assert report.errors[0].startswith("t.jsonl:2: line is longer than 100 bytes")
        assert report.errors[1].startswith("t.jsonl:4: malformed JSON")
        assert (report.rows, report.lines, report.error_count) == (2, 4, 2)


def test_warnings_do_not_refuse() -> None:
    reordered = {
        "messages": [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}]
    }
    rows = [
        CHAT,
        {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]},
        reordered,  # the same row spelled differently
        {"prompt": "", "completion": "c"},
    ]
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    report = check_chunks("t.jsonl", [data])
    assert report.ok
    assert report.warnings == [
        "t.jsonl:2: messages[0] is a user turn with empty content",
        "t.jsonl:3: repeats t.jsonl:1",
        "t.jsonl:4: 'prompt' is empty",
    ]
    assert (report.format, report.duplicates, report.empty_contents) == ("mixed", 1, 2)
    assert datacheck.file_warnings(report) == [
        "t.jsonl: mixes 3 chat and 1 prompt/completion rows; both train, but one format per"
        " dataset is what you meant",
        "t.jsonl: 1 rows repeat an earlier row; the first: t.jsonl:3: repeats t.jsonl:1",
        "t.jsonl: 2 user/system turns or prompts are empty; the first: t.jsonl:2: messages[0]"
        " is a user turn with empty content",
    ]


def test_validation_rows_that_are_training_rows() -> None:
    train = RowIndex()
    check_chunks("train.jsonl", [GOOD + b"\n"], index=train)
    other = {"prompt": "p", "completion": "c"}
    report = check_chunks(
        "val.jsonl", [json.dumps(other).encode() + b"\n" + GOOD], compare_with=train
    )
    assert report.overlap == 1
    assert report.warnings == ["val.jsonl:2: is also a training row (train.jsonl:1)"]


def test_streaming_gives_the_same_report_for_any_chunking() -> None:
    data = (
        "\ufeff".encode()
        + GOOD
        + b"\r\n\n"
        + GOOD
        + b"\n{bad\n"
        + json.dumps({"prompt": "é", "completion": "ü"}).encode()
    )
    expected = check_chunks("t.jsonl", [data]).to_dict()
    for size in (1, 2, 3, 5, 64):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert check_chunks("t.jsonl", chunks).to_dict() == expected
    assert expected["rows"] == 3
    assert expected["errors"] == [
        "t.jsonl:4: malformed JSON (Expecting property name enclosed in double quotes at column 2)"
    ]


def test_sampled_windows_name_rows_by_byte_offset() -> None:
    bad = b'{"prompt": 1, "completion": "c"}'
    data = GOOD + b"\n" + bad + b"\n" + GOOD + b"\n"
    check = JsonlCheck("s3://b/k.jsonl")
    # A window starting inside the first row: that partial row is skipped, the next is read.
    check.feed_window(data[5:], 5, at_end=True)
    report = check.close()
    offset = len(GOOD) + 1
    assert report.errors == [
        f"s3://b/k.jsonl, the row at byte {offset}: 'prompt' must be a string, got int"
        " (for conversations use 'messages')"
    ]
    assert not report.complete
    assert report.sha256 is None
    # A window ending inside a row leaves it unread.
    partial = JsonlCheck("k")
    partial.feed_window(data[: offset + 5], 0, at_end=False)
    assert partial.close().to_dict()["rows"] == 1


def test_the_training_job_fails_on_the_first_error_and_logs_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.jsonl").write_bytes(GOOD + b"\n" + GOOD + b"\n")
    (tmp_path / "b.jsonl").write_bytes(GOOD + b"\n")
    with caplog.at_level(logging.WARNING, logger="llm_sft.data"):
        assert load_channel("train", tmp_path).rows == 3
    assert f"{tmp_path / 'b.jsonl'}:1: repeats {tmp_path / 'a.jsonl'}:1" in caplog.text
    (tmp_path / "b.jsonl").write_bytes(b"{\n\xff\n")
    with pytest.raises(DataError, match=r"b\.jsonl:1: malformed JSON"):
        load_channel("train", tmp_path)


def test_token_stats_follow_truncation_and_dropping() -> None:
    stats = TokenStats(max_seq_length=128)
    stats.add(10, 4)
    stats.add(100, 50)
    stats.add(300, 20)  # truncated, keeps trainable tokens
    stats.add(500, 0)  # truncated to nothing trainable: dropped
    assert stats.to_dict() == {
        "max_seq_length": 128,
        "rows": 4,
        "tokens_per_epoch": 10 + 100 + 128,
        "truncated": 2,
        "dropped": 1,
        "longest": 500,
        "histogram": {"<=64": 1, "<=128": 1, ">128": 2},
    }
