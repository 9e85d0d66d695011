"""Tiny Llama-architecture models built in-process, for tests, the benchmark and the offline demo.

Nothing is downloaded: a byte-level BPE tokenizer is trained with `tokenizers` on the given
texts, a randomly initialised `LlamaForCausalLM` is sized to it, and both are saved with
`save_pretrained`, so the folder loads with `AutoTokenizer` / `AutoModelForCausalLM` exactly
like a model staged from the Hub.

    python -m llm_sft.tiny --output ./tiny-model --data examples/data/chat/train.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_sft.chat_template import DEFAULT_CHAT_TEMPLATE, ROLE_MARKERS

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture knobs; the vocabulary size is a target for the BPE trainer."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    # Wider than Llama's 0.02: with a random, untrained head, 0.02 keeps every logit near 0, so
    # adapters on the hidden layers cannot make any token likely and the loss sits at ln(vocab).
    initializer_range: float = 0.1


# Trains in seconds on one CPU thread: what the tests use.
TINY = TinyModelSpec()
# ~4M parameters: the benchmark's second size.
SMALL_4M = TinyModelSpec(
    vocab_size=2048,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    initializer_range=0.05,
)
PRESETS: dict[str, TinyModelSpec] = {"tiny": TINY, "small-4m": SMALL_4M}


def texts_from_jsonl(paths: Iterable[Path]) -> list[str]:
    """Every string in chat (`messages`) or prompt/completion rows: the tokenizer's corpus."""
    texts: list[str] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for message in row.get("messages", []):
                texts.append(str(message.get("content", "")))
            for key in ("prompt", "completion"):
                if isinstance(row.get(key), str):
                    texts.append(row[key])
    return texts


def build_tokenizer(texts: Sequence[str], vocab_size: int = TINY.vocab_size) -> object:
    """A byte-level BPE fast tokenizer with BOS/EOS/PAD, role markers and the default template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [PAD, BOS, EOS, *ROLE_MARKERS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts) or ["hello world"], trainer=trainer)
    # Like Llama: plain `tokenizer(text)` prepends BOS; chat rendering adds it via the template.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, backend.token_to_id(BOS))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_MARKERS),
        model_max_length=TINY.max_position_embeddings,
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    output_dir: Path,
    texts: Sequence[str],
    *,
    spec: TinyModelSpec = TINY,
    seed: int = 0,
) -> Path:
    """Train the tokenizer, initialise the model, save both to `output_dir`; returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(texts, spec.vocab_size)
    vocab = len(tokenizer)  # type: ignore[arg-type]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD)}  # type: ignore[attr-defined]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        initializer_range=spec.initializer_range,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD], max_new_tokens=64
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)  # type: ignore[attr-defined]
    return output_dir


def count_parameters(model_dir: Path) -> int:
    """Parameters of a saved model, read from its safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                total += count
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, required=True, help="folder to write the model to")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="JSONL files to train the BPE on"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_tiny_model(
        args.output, texts_from_jsonl(args.data), spec=PRESETS[args.preset], seed=args.seed
    )
    print(f"wrote {args.preset} model ({count_parameters(out):,} parameters) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
