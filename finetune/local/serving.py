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

Over 400 lines as one idea: the serving container's HTTP contract, its request bounds and
error answers, in one server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib import request as urlrequest

__all__ = ["InferenceServer", "RequestError", "check_request"]

#: Bounds that keep a local endpoint responsive whatever a request asks for.
MAX_NEW_TOKENS = 256
MAX_BODY_BYTES = 1_000_000
#: A client that sends nothing for this long is answered 408 and disconnected.
READ_TIMEOUT_SECONDS = 10.0
#: Requests served at once; past it the answer is 503 at once, not an unbounded queue.
MAX_CONCURRENT_REQUESTS = 4


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
        Handler = _handler_class(self)  # noqa: N806 - a class

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True  # a stalled client never holds up stop()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns within this
            name="inference-server",
            daemon=True,
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

    def check_input_length(self, payload: dict[str, Any]) -> None:
        """Refuse (422) a prompt that with ``max_new_tokens`` exceeds the model's context, as
        TGI does (``max_total_tokens``), before any generation time is spent on it."""
        context = getattr(getattr(self._model, "config", None), "max_position_embeddings", None)
        if not context:
            return
        chat = "messages" in payload
        try:
            prompt = (
                self._tokenizer.apply_chat_template(
                    payload["messages"], tokenize=False, add_generation_prompt=True
                )
                if chat
                else payload["inputs"]
            )
            tokens = len(self._tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
        except Exception as error:  # a chat template refusing the conversation, for one
            raise RequestError(422, f"{'messages' if chat else 'inputs'}: {error}") from None
        parameters = payload.get("parameters") or {}
        new_tokens = min(int(parameters.get("max_new_tokens") or 32), MAX_NEW_TOKENS)
        if tokens + new_tokens > context:
            raise RequestError(
                422,
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {context}. "
                f"Given: {tokens} `inputs` tokens and {new_tokens} `max_new_tokens`",
            )

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


# -- HTTP ---------------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the server answers with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
_ROLES = ("system", "user", "assistant")
_BOOLEAN_PARAMETERS = ("details", "decoder_input_details", "return_full_text", "do_sample")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "number")


def check_request(payload: object) -> dict[str, Any]:
    """The TGI request shape, or RequestError(422) naming the field that is wrong."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object, got {_json_type(payload)}")
    if "messages" in payload:
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise RequestError(422, "`messages` must be a non-empty array of {role, content}")
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise RequestError(422, f"`messages[{index}]` must be an object")
            if message.get("role") not in _ROLES:
                raise RequestError(
                    422, f"`messages[{index}].role` must be one of {', '.join(_ROLES)}"
                )
            if not isinstance(message.get("content"), str):
                raise RequestError(
                    422,
                    f"`messages[{index}].content` must be a string, got "
                    f"{_json_type(message.get('content'))}",
                )
    elif "inputs" in payload:
        if not isinstance(payload["inputs"], str):
            raise RequestError(
                422, f"`inputs` must be a string, got {_json_type(payload['inputs'])}"
            )
    else:
        raise RequestError(422, "the request needs `inputs` (a string) or `messages` (a chat)")
    parameters = payload.get("parameters")
    if parameters is None:
        return payload
    if not isinstance(parameters, dict):
        raise RequestError(422, f"`parameters` must be an object, got {_json_type(parameters)}")
    max_new_tokens = parameters.get("max_new_tokens")
    if max_new_tokens is not None and (
        not isinstance(max_new_tokens, int)
        or isinstance(max_new_tokens, bool)
        or max_new_tokens < 1
    ):
        raise RequestError(422, "`max_new_tokens` must be a positive integer")
    for name in _BOOLEAN_PARAMETERS:
        if parameters.get(name) is not None and not isinstance(parameters[name], bool):
            raise RequestError(
                422, f"`{name}` must be a boolean, got {_json_type(parameters[name])}"
            )
    return payload


def _handler_class(server: InferenceServer) -> type[BaseHTTPRequestHandler]:
    """The HTTP side of the SageMaker container contract: every request gets a status and a
    JSON body, whatever it holds; ``READ_TIMEOUT_SECONDS`` bounds every read;
    ``MAX_CONCURRENT_REQUESTS`` bounds the invocations in progress (503 past it)."""
    slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_SECONDS  # applies to every read from the client's socket
        # A request line that is not HTTP is answered with an HTTP status line, not HTTP/0.9.
        default_request_version = "HTTP/1.0"

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._reply(200, {"status": "healthy"})
            else:
                self._reply(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._reply(404, {"error": f"no route {self.path}"})
                return
            if not slots.acquire(blocking=False):
                self._reply(
                    503,
                    {"error": f"busy: {MAX_CONCURRENT_REQUESTS} requests in progress; retry"},
                    retry_after=1,
                )
                return
            try:
                payload = check_request(self._read_json())
                server.check_input_length(payload)
                answer = server.generate(payload)
            except RequestError as error:
                self._reply(error.status, {"error": error.message})
            except TimeoutError:
                self._reply(
                    408,
                    {"error": f"the body did not arrive within {READ_TIMEOUT_SECONDS:g} s"},
                )
            except (ValueError, TypeError, KeyError) as error:
                self._reply(422, {"error": str(error)})
            except Exception as error:  # the model failed: a status, never a dropped socket
                self._reply(500, {"error": f"{type(error).__name__}: {error}"})
            else:
                self._reply(200, answer)
            finally:
                slots.release()

        def _read_json(self) -> object:
            content_type = self.headers.get("Content-Type")
            media_type = (content_type or "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                raise RequestError(
                    415, f"Content-Type must be application/json, got {content_type or 'none'}"
                )
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise RequestError(411, "send the body with a Content-Length, not chunked")
            declared = self.headers.get("Content-Length")
            if declared is None:
                raise RequestError(411, "Content-Length is required")
            try:
                length = int(declared)
            except ValueError:
                raise RequestError(
                    400, f"Content-Length {declared[:40]!r} is not a number"
                ) from None
            if length < 0:
                raise RequestError(400, f"Content-Length {length} is negative")
            if length > MAX_BODY_BYTES:
                raise RequestError(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
            body = self.rfile.read(length)
            if len(body) < length:
                raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
            try:
                return json.loads(body)
            except RecursionError:
                raise RequestError(400, "the body is nested too deeply") from None
            except ValueError as error:
                raise RequestError(400, f"the body is not JSON: {error}") from None

        def _reply(self, status: int, body: object, *, retry_after: int | None = None) -> None:
            data = json.dumps(body).encode()
            if status >= 400:
                self.close_connection = True  # the rest of a refused body is never read
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client is gone

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """http.server's own refusals (a malformed request line, an unknown method) in JSON."""
            self._reply(code, {"error": message or explain or "bad request"})

        def log_message(self, format: str, *args: Any) -> None:
            return  # the CLI reports; per-request access logs would drown it

    return Handler
