"""The local inference server's HTTP side: every request gets a status and a JSON body, reads
time out, input is bounded by the model's context, and concurrency is bounded with a 503.

The HTTP cases use a stand-in model (no torch); one case loads the real tiny model."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from finetune.local import serving
from finetune.local.serving import InferenceServer


class _Tokenizer:
    """One token per whitespace-separated word."""

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> str:
        if messages[0]["role"] == "assistant":
            raise ValueError("conversations start with a user turn")
        return " ".join(m["content"] for m in messages)


@dataclass
class StandIn(InferenceServer):
    """Answers after ``release`` is set (or at once); counts generations in progress."""

    release: threading.Event = field(default_factory=threading.Event)
    wait_for_release: bool = False
    in_progress: int = 0

    def _load(self) -> None:
        self._tokenizer = _Tokenizer()
        self._model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))

    def generate(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        self.in_progress += 1
        try:
            if self.wait_for_release:
                self.release.wait(timeout=30)
            return [{"generated_text": "ok"}]
        finally:
            self.in_progress -= 1


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.setattr(serving, "READ_TIMEOUT_SECONDS", 1.0)
    instance = StandIn(tmp_path).start()
    yield instance
    instance.release.set()
    instance.stop()


def post(
    server: InferenceServer,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(*server.url.removeprefix("http://").split(":"), 10)
    all_headers = {"Content-Length": str(len(body))}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    connection.putrequest("POST", "/invocations")
    for name, value in all_headers.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    assert response.getheader("Content-Type") == "application/json"
    return status, json.loads(data)


def raw(server: InferenceServer, data: bytes, *, wait: float = 5.0) -> tuple[int, Any]:
    """Send bytes as they are; the status line and JSON body of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[1, 2]", 422, "must be a JSON object, got array"),
        (b'"hello"', 422, "must be a JSON object, got string"),
        (b"null", 422, "must be a JSON object, got null"),
        (b"{}", 422, "needs `inputs`"),
        (b'{"inputs": 5}', 422, "`inputs` must be a string, got number"),
        (b'{"inputs": "hi", "parameters": []}', 422, "`parameters` must be an object"),
        (b'{"inputs": "hi", "parameters": {"max_new_tokens": "3"}}', 422, "positive integer"),
        (b'{"inputs": "hi", "parameters": {"max_new_tokens": 0}}', 422, "positive integer"),
        (b'{"inputs": "hi", "parameters": {"details": "yes"}}', 422, "`details` must be a boolean"),
        (b'{"messages": "hi"}', 422, "`messages` must be a non-empty array"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', 422, "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": 1}]}', 422, "messages[0].content"),
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ],
)
def test_bad_bodies_get_a_status_and_a_json_error(
    server: StandIn, body: bytes, status: int, message: str
) -> None:
    got_status, got_body = post(server, body)
    assert got_status == status
    assert message in got_body["error"]


def test_a_good_request_is_answered(server: StandIn) -> None:
    assert post(server, b'{"inputs": "hello there"}') == (200, [{"generated_text": "ok"}])
    assert post(server, b'{"messages": [{"role": "user", "content": "hi"}]}')[0] == 200


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), (None, 415), ("application/x-www-form-urlencoded", 415)],
)
def test_only_json_is_accepted(server: StandIn, content_type: str | None, status: int) -> None:
    got_status, body = post(server, b'{"inputs": "hi"}', content_type=content_type)
    assert got_status == status
    assert "Content-Type must be application/json" in body["error"]
    assert (
        post(server, b'{"inputs": "hi"}', content_type="application/json; charset=utf-8")[0] == 200
    )


@pytest.mark.parametrize(
    ("length_header", "status", "message"),
    [
        ("Content-Length: abc\r\n", 400, "is not a number"),
        ("Content-Length: -1\r\n", 400, "is negative"),
        ("", 411, "Content-Length is required"),
        ("Transfer-Encoding: chunked\r\n", 411, "not chunked"),
        (f"Content-Length: {serving.MAX_BODY_BYTES + 1}\r\n", 413, "over"),
    ],
)
def test_bad_content_lengths_get_a_status(
    server: StandIn, length_header: str, status: int, message: str
) -> None:
    request = (
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{length_header}\r\n"
    ).encode()
    got_status, body = raw(server, request)
    assert got_status == status
    assert message in body["error"]


def test_a_stalled_upload_times_out_with_408(server: StandIn) -> None:
    started = time.monotonic()
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"inputs": '
    )
    status, body = raw(server, request)
    assert status == 408
    assert "did not arrive" in body["error"]
    assert time.monotonic() - started < 5
    assert post(server, b'{"inputs": "still serving"}')[0] == 200


def test_malformed_request_lines_and_routes_get_json_errors(server: StandIn) -> None:
    assert raw(server, b"BLAH\r\n\r\n")[0] == 400
    assert raw(server, b"DELETE /invocations HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 501
    status, body = raw(server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (404, {"error": "no route /nowhere"})
    assert raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n") == (200, {"status": "healthy"})


def test_input_longer_than_the_context_is_refused_before_generating(server: StandIn) -> None:
    long_prompt = " ".join(["word"] * 60)  # 60 tokens + 32 new > 64
    status, body = post(server, json.dumps({"inputs": long_prompt}).encode())
    assert status == 422
    assert "must be <= 64" in body["error"]
    assert "Given: 60 `inputs` tokens and 32 `max_new_tokens`" in body["error"]
    fits = json.dumps({"inputs": long_prompt, "parameters": {"max_new_tokens": 4}}).encode()
    assert post(server, fits)[0] == 200
    chat = {"messages": [{"role": "assistant", "content": "x"}]}
    status, body = post(server, json.dumps(chat).encode())
    assert status == 422
    assert "conversations start with a user turn" in body["error"]


def test_requests_are_served_concurrently_up_to_the_limit_then_503(server: StandIn) -> None:
    server.wait_for_release = True
    limit = serving.MAX_CONCURRENT_REQUESTS
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(post(server, b'{"inputs": "hi"}')[0]))
        for _ in range(limit)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while server.in_progress < limit and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.in_progress == limit  # all of them at once, none queued behind another
    status, body = post(server, b'{"inputs": "one too many"}')
    assert status == 503
    assert "busy" in body["error"]
    assert raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200  # health stays up
    server.release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [200] * limit
    assert post(server, b'{"inputs": "hi"}')[0] == 200


def test_the_tiny_model_bounds_input_by_its_context(tmp_path: Path) -> None:
    """The real model and tokenizer: a 128k-character prompt is refused at once."""
    import shutil

    from finetune.local.session import LocalSession

    model = tmp_path / "model"
    shutil.copytree(LocalSession.tiny_model(), model)
    try:  # the files as training writes them for the serving container
        from llm_sft.serving_contract import make_servable
    except ImportError:
        pass
    else:
        make_servable(model)
    server = InferenceServer(model).start()
    try:
        started = time.monotonic()
        status, body = post(server, json.dumps({"inputs": "hello " * 21_000}).encode())
        assert status == 422
        assert "`inputs` tokens + `max_new_tokens` must be <=" in body["error"]
        assert time.monotonic() - started < 5
        status, answer = post(server, b'{"inputs": "hello", "parameters": {"max_new_tokens": 2}}')
        assert status == 200
        assert isinstance(answer[0]["generated_text"], str)
    finally:
        server.stop()
