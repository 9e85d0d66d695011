"""A local inference server implementing the SageMaker container contract on 127.0.0.1.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` takes the Hugging Face
LLM (TGI) request shape, ``{"inputs": "...", "parameters": {"max_new_tokens": 32}}`` or chat
``{"messages": [...]}``, and answers ``[{"generated_text": "..."}]``, as the serving container
the workflow deploys on AWS does. The local backend starts one per endpoint.

The model folder is read the way the pinned serving container reads it
(``llm_sft.serving_contract.load_as_served``): rope settings from ``rope_theta``/``rope_scaling``
only, the tokenizer class and chat template from ``tokenizer_config.json``; a folder that
container cannot load fails to start here too. TGI's generate semantics are kept where a test
depends on them: ``inputs`` is tokenized with the tokenizer's special tokens, a rendered chat
without; ``return_full_text`` defaults to true (TGI's default for a model served from a local
folder, which has no Hub pipeline tag); ``details`` / ``decoder_input_details`` add TGI's
``details`` object (``finish_reason``, ``generated_tokens``, ``seed``, ``prefill`` with the
prompt tokens' log-probabilities, the first one ``null``, and ``tokens``). Decoding is greedy.
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
        import torch

        from llm_sft.serving_contract import load_as_served

        self._model, self._tokenizer = load_as_served(self.model_dir, dtype=torch.float32)
        self._model.eval()

    def generate(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """One TGI-style generation (greedy)."""
        import torch

        parameters = payload.get("parameters") or {}
        max_new_tokens = min(int(parameters.get("max_new_tokens") or 32), MAX_NEW_TOKENS)
        if max_new_tokens < 1:
            raise ValueError("`max_new_tokens` must be strictly positive")
        chat = "messages" in payload
        if chat:
            prompt = self._tokenizer.apply_chat_template(
                payload["messages"], tokenize=False, add_generation_prompt=True
            )
        else:
            prompt = payload.get("inputs")
            if not isinstance(prompt, str):
                raise ValueError("the request needs 'inputs' (a string) or 'messages' (a chat)")
        # TGI's router: plain inputs get the tokenizer's special tokens, a rendered chat does not.
        encoded = self._tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
        prompt_ids = encoded["input_ids"]
        with self._lock, torch.no_grad():
            output = self._model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
            prefill_logprobs = (
                self._prompt_logprobs(prompt_ids) if parameters.get("decoder_input_details") else []
            )
        new_ids = [int(i) for i in output.sequences[0][prompt_ids.shape[1] :]]
        text = self._tokenizer.decode(new_ids, skip_special_tokens=True)
        full_text = parameters.get("return_full_text")
        if not chat and (full_text is None or full_text):
            text = prompt + text
        answer: dict[str, Any] = {"generated_text": text}
        if parameters.get("details") or parameters.get("decoder_input_details"):
            answer["details"] = self._details(
                [int(i) for i in prompt_ids[0]], prefill_logprobs, new_ids, output.logits
            )
        return [answer]

    def _prompt_logprobs(self, prompt_ids: Any) -> list[float | None]:
        """log p(token_i | tokens before i) of the prompt; None for the first, as TGI."""
        import torch

        logits = self._model(input_ids=prompt_ids, use_cache=False).logits[0].float()
        targets = prompt_ids[0, 1:].unsqueeze(1)
        values = torch.log_softmax(logits[:-1], dim=-1).gather(1, targets).squeeze(1)
        return [None, *(float(v) for v in values.tolist())]

    def _details(
        self,
        prompt_ids: list[int],
        prefill_logprobs: list[float | None],
        new_ids: list[int],
        step_logits: Any,
    ) -> dict[str, Any]:
        """TGI's ``details`` (router/src/lib.rs ``Details``, v3.3.6)."""
        import torch

        tokenizer = self._tokenizer
        special = set(tokenizer.all_special_ids)

        def piece(token_id: int) -> str:
            return str(tokenizer.decode([token_id], skip_special_tokens=False))

        prefill = [
            {"id": token_id, "text": piece(token_id), "logprob": logprob}
            for token_id, logprob in zip(prompt_ids, prefill_logprobs, strict=False)
        ]
        tokens = []
        for token_id, logits in zip(new_ids, step_logits, strict=True):
            logprob = float(torch.log_softmax(logits[0].float(), dim=-1)[token_id])
            tokens.append(
                {
                    "id": token_id,
                    "text": piece(token_id),
                    "logprob": logprob,
                    "special": token_id in special,
                }
            )
        eos = tokenizer.eos_token_id
        finished = bool(new_ids) and eos is not None and new_ids[-1] == eos
        return {
            "finish_reason": "eos_token" if finished else "length",
            "generated_tokens": len(new_ids),
            "seed": None,
            "prefill": prefill,
            "tokens": tokens,
        }
