"""A local inference server implementing the SageMaker container contract on 127.0.0.1.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` takes the Hugging Face
LLM (TGI) request shape, ``{"inputs": "...", "parameters": {"max_new_tokens": 32}}`` or chat
``{"messages": [...]}``, and answers ``[{"generated_text": "..."}]``, as the serving container
the workflow deploys on AWS does. The local backend starts one per endpoint.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib import request as urlrequest

__all__ = ["InferenceServer"]

#: Bounds that keep a local endpoint responsive whatever a request asks for.
MAX_NEW_TOKENS = 256
MAX_BODY_BYTES = 1_000_000


@dataclass
class InferenceServer:
    """Serves the model in ``model_dir`` until ``stop()``."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> InferenceServer:
        self._load()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/ping":
                    self._reply(200, {"status": "healthy"})
                else:
                    self._reply(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                if self.path != "/invocations":
                    self._reply(404, {"error": f"no route {self.path}"})
                    return
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY_BYTES:
                    self._reply(413, {"error": "request body too large"})
                    return
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                    self._reply(200, server.generate(payload))
                except (ValueError, TypeError, KeyError) as error:
                    self._reply(400, {"error": str(error)})

            def _reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the CLI reports; per-request access logs would drown it

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="inference-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ping(self) -> bool:
        try:
            with urlrequest.urlopen(f"{self.url}/ping", timeout=5) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def invoke(self, body: bytes) -> bytes:
        http_request = urlrequest.Request(  # noqa: S310 - loopback only
            f"{self.url}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urlrequest.urlopen(http_request, timeout=120) as response:  # noqa: S310
                return bytes(response.read())
        except urlrequest.HTTPError as error:
            return bytes(error.read())

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir))
        self._model.eval()

    def generate(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        """One TGI-style generation."""
        import torch

        parameters = payload.get("parameters") or {}
        max_new_tokens = min(int(parameters.get("max_new_tokens", 32)), MAX_NEW_TOKENS)
        if "messages" in payload:
            prompt = self._tokenizer.apply_chat_template(
                payload["messages"], tokenize=False, add_generation_prompt=True
            )
        else:
            prompt = payload.get("inputs")
            if not isinstance(prompt, str):
                raise ValueError("the request needs 'inputs' (a string) or 'messages' (a chat)")
        encoded = self._tokenizer(prompt, return_tensors="pt")
        with self._lock, torch.no_grad():
            output = self._model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
            )
        new_tokens = output[0][encoded["input_ids"].shape[1] :]
        return [{"generated_text": self._tokenizer.decode(new_tokens, skip_special_tokens=True)}]
