"""The reference the deployed model is checked against: one example, scored by the training stack.

After the model is saved, one example (held out when there is a validation set) is scored with
the model in memory: the log-probability of every token given the tokens before it. The smoke
test sends the same text to the endpoint with TGI's ``decoder_input_details`` and compares:

- the token ids the serving tokenizer produced with ``input_ids`` here (TGI tokenizes ``inputs``
  with the special tokens the tokenizer adds, so ``inputs`` is the text whose tokenization
  *with* special tokens equals the training encoding: the rendered chat minus a leading BOS
  that the tokenizer adds by itself);
- the served loss over ``target_positions`` (the tokens training learns: assistant turns, or the
  completion) with ``loss`` here.

``serving_reference.json`` (format ``REFERENCE_FORMAT``)::

    {"format": 1, "source": "validation.jsonl:3", "held_out": true,
     "inputs": "<|user|>\\n...", "input_ids": [...], "token_logprobs": [null, -2.1, ...],
     "target_positions": [17, 18, ...], "loss": 1.234, "all_positions_loss": 2.345,
     "matches_training_encoding": true, "dtype": "bfloat16", "device": "cuda"}

``token_logprobs[0]`` is null (the first token has no context), as in TGI's ``prefill``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft.data import Example
from llm_sft.encoding import IGNORE_INDEX, assistant_spans, encode_example

logger = logging.getLogger(__name__)

REFERENCE_FORMAT = 1
#: Below the deployed container's MAX_INPUT_TOKENS (2048), long enough to exercise positions.
REFERENCE_MAX_TOKENS = 1024
#: Examples considered when choosing (encoding is cheap, but a validation set may be large).
CANDIDATES = 256


@dataclass(frozen=True)
class ReferenceExamples:
    """Where the reference example comes from."""

    examples: Sequence[Example]
    held_out: bool

    @classmethod
    def from_split(
        cls, validation: Sequence[Example], train: Sequence[Example]
    ) -> ReferenceExamples:
        return cls(validation, True) if validation else cls(train, False)


@dataclass(frozen=True)
class ReferenceInput:
    source: str
    inputs: str
    input_ids: list[int]
    target_positions: list[int]
    matches_training_encoding: bool


def reference_input(tokenizer: Any, example: Example, max_tokens: int) -> ReferenceInput | None:
    """The request text for one example and the ids the serving tokenizer should produce."""
    encoded = encode_example(tokenizer, example, max_seq_length=max_tokens + 1)
    if encoded.truncated or len(encoded.input_ids) > max_tokens or encoded.trainable_tokens == 0:
        return None
    if example.is_chat:
        full, _ = assistant_spans(tokenizer, example)
    else:
        assert example.prompt is not None
        assert example.completion is not None
        full = example.prompt + example.completion + (tokenizer.eos_token or "")
    bos = getattr(tokenizer, "bos_token", None)
    candidates = [full[len(bos) :]] if bos and full.startswith(bos) else []
    candidates.append(full)
    for text in candidates:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if ids == encoded.input_ids:
            targets = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
            return ReferenceInput(example.source, text, ids, targets, True)
    # The serving tokenization of the text differs from training's: score what will be served.
    ids = list(tokenizer(full, add_special_tokens=True)["input_ids"])
    if not 1 < len(ids) <= max_tokens:
        return None
    return ReferenceInput(example.source, full, ids, list(range(1, len(ids))), False)


def choose_reference(
    tokenizer: Any, examples: Sequence[Example], max_tokens: int = REFERENCE_MAX_TOKENS
) -> ReferenceInput | None:
    """The longest of the first CANDIDATES examples that fits (more positions, more signal)."""
    best: ReferenceInput | None = None
    for example in examples[:CANDIDATES]:
        candidate = reference_input(tokenizer, example, max_tokens)
        if candidate is None:
            continue
        if best is None or (
            (candidate.matches_training_encoding, len(candidate.input_ids))
            > (best.matches_training_encoding, len(best.input_ids))
        ):
            best = candidate
    return best


def token_logprobs(model: Any, input_ids: Sequence[int]) -> list[float | None]:
    """log p(token_i | tokens before i) for every position; None for the first."""
    import torch

    from llm_sft.modeling import input_device

    was_training = model.training
    model.eval()
    try:
        ids = torch.tensor([list(input_ids)], device=input_device(model))
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
        targets = ids[0, 1:].to(logits.device).unsqueeze(1)
        logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, targets).squeeze(1)
    finally:
        model.train(was_training)
    return [None, *(float(x) for x in logprobs.tolist())]


def mean_nll(logprobs: Sequence[float | None], positions: Sequence[int]) -> float:
    values = [logprobs[i] for i in positions]
    scored = [-v for v in values if v is not None]
    return math.fsum(scored) / len(scored) if scored else math.nan


def build_reference(model: Any, tokenizer: Any, source: ReferenceExamples) -> dict[str, Any] | None:
    chosen = choose_reference(tokenizer, source.examples)
    if chosen is None:
        return None
    logprobs = token_logprobs(model, chosen.input_ids)
    return {
        "format": REFERENCE_FORMAT,
        "source": chosen.source,
        "held_out": source.held_out,
        "inputs": chosen.inputs,
        "input_ids": chosen.input_ids,
        "token_logprobs": logprobs,
        "target_positions": chosen.target_positions,
        "loss": mean_nll(logprobs, chosen.target_positions),
        "all_positions_loss": mean_nll(logprobs, range(1, len(logprobs))),
        "matches_training_encoding": chosen.matches_training_encoding,
        "dtype": str(getattr(model, "dtype", "")).removeprefix("torch."),
        "device": str(getattr(model, "device", "")),
    }


def write_reference(
    model: Any, tokenizer: Any, source: ReferenceExamples | None, model_dir: Path
) -> bool:
    """Write ``serving_reference.json``; False (logged) when there is nothing to score or it
    fails: the trained model is never lost to this check, the deployment smoke test refuses a
    model without a reference instead."""
    from llm_sft.output import write_json
    from llm_sft.serving_contract import REFERENCE_FILE

    if source is None:
        return False
    try:
        reference = build_reference(model, tokenizer, source)
    except Exception as error:
        logger.warning("serving reference not written: %s: %s", type(error).__name__, error)
        return False
    if reference is None:
        logger.warning(
            "serving reference not written: no example fits %d tokens", REFERENCE_MAX_TOKENS
        )
        return False
    write_json(Path(model_dir) / REFERENCE_FILE, reference)
    logger.info(
        "serving reference: %s, %d tokens, loss %.4f (%s)",
        reference["source"],
        len(reference["input_ids"]),
        reference["loss"],
        "held out" if source.held_out else "a training example: no validation data",
    )
    return True
