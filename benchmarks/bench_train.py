"""Benchmark: this project's trainer vs TRL's `SFTTrainer` with its defaults (CPU, one thread).

    python benchmarks/bench_train.py [--epochs 2] [--presets tiny small-4m]

Not a test: it prints figures. For each model size (the tests' tiny Llama and a ~4M-parameter
one, both built in-process, nothing downloaded) and the same data (examples/data/chat), it
trains with:
- ours: `llm_sft` with its defaults (LoRA r=16/alpha=32/dropout=0.05 on all linear layers,
  lr 2e-4 cosine, batch 4, packing on, fp32 and no gradient checkpointing on CPU);
  set: model_id, epochs, torch_threads=1, save_steps=0 (no checkpoint I/O), no validation
  during training;
- TRL: `SFTTrainer(model=<path>, args=SFTConfig(...), train_dataset=..., peft_config=...)` with
  SFTConfig defaults; set: output_dir, num_train_epochs (same as ours), use_cpu=True (without it
  the default bf16=True refuses to start on a machine without a GPU), report_to="none" (keeps
  the run offline and writes no mlruns/), and peft_config = the same LoRA settings as ours, so
  both train the same adapter (without it TRL would fine-tune every weight). Everything else is
  TRL's default: bf16 autocast, gradient checkpointing, lr 2e-5, batch 8, no packing.

Both are measured the same way:
- tokens/s = non-padding tokens processed during training (every sample's token count x epochs)
  / wall-clock seconds of the training call (ours: `Trainer.train()`, TRL: `trainer.train()`);
- eval loss = the same function (`llm_sft.trainer.evaluate`: token-weighted mean over assistant
  tokens of examples/data/chat/validation.jsonl) applied to each trained model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft.data import Example, read_jsonl
from llm_sft.encoding import encode_examples
from llm_sft.hyperparameters import Hyperparameters, parse_hyperparameters
from llm_sft.packing import Row, build_rows, pack_length
from llm_sft.tiny import PRESETS, build_tiny_model, count_parameters, texts_from_jsonl

REPO = Path(__file__).resolve().parents[1]

DATA = REPO / "examples" / "data" / "chat"


@dataclass(frozen=True)
class Figures:
    tokens: int
    seconds: float
    eval_loss: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def _eval_rows(tokenizer: Any, validation: list[Example], hp: Hyperparameters) -> list[Row]:
    encoded = encode_examples(tokenizer, validation, hp.max_seq_length, "validation")
    return build_rows(encoded.examples, hp.max_seq_length, packing=True)


def run_ours(
    model_dir: Path, train: list[Example], validation: list[Example], epochs: float
) -> Figures:
    from llm_sft.modeling import (
        BaseModel,
        add_lora,
        load_base_model,
        load_tokenizer,
        plan_device,
    )
    from llm_sft.trainer import Trainer, evaluate

    hp = parse_hyperparameters(
        {"model_id": str(model_dir), "epochs": epochs, "torch_threads": 1, "save_steps": 0}
    )
    base = BaseModel(path=str(model_dir), reference=str(model_dir), source="local")
    plan = plan_device(hp)
    tokenizer = load_tokenizer(base, hp)
    train_set = encode_examples(tokenizer, train, hp.max_seq_length, "train")
    model = add_lora(load_base_model(base, hp, plan), hp, plan)
    lengths = [len(e.input_ids) for e in train_set.examples]
    row_length = pack_length(hp.max_seq_length, lengths, model.config.hidden_size)
    rows = build_rows(train_set.examples, row_length, hp.packing)
    trainer = Trainer(model, hp, plan, rows, [], int(tokenizer.pad_token_id), None, {})
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # METRIC lines
        result = trainer.train()
    seconds = time.perf_counter() - started
    eval_loss = evaluate(
        model, _eval_rows(tokenizer, validation, hp), 4, tokenizer.pad_token_id, plan
    )
    assert eval_loss is not None
    return Figures(tokens=result.tokens, seconds=seconds, eval_loss=eval_loss)


def run_trl(
    model_dir: Path,
    train: list[Example],
    validation: list[Example],
    epochs: float,
    output_dir: Path,
) -> Figures:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from llm_sft.modeling import BaseModel, load_tokenizer, plan_device
    from llm_sft.trainer import evaluate

    rows = [
        {"messages": [{"role": m.role, "content": m.content} for m in e.messages]} for e in train
    ]
    trainer = SFTTrainer(
        model=str(model_dir),
        args=SFTConfig(
            output_dir=str(output_dir),
            num_train_epochs=epochs,
            report_to="none",
            use_cpu=True,  # required: the default bf16=True refuses to start on CPU otherwise
        ),
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * epochs)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    hp = parse_hyperparameters({"model_id": str(model_dir)})
    base = BaseModel(path=str(model_dir), reference=str(model_dir), source="local")
    tokenizer = load_tokenizer(base, hp)
    eval_loss = evaluate(
        trainer.model,
        _eval_rows(tokenizer, validation, hp),
        4,
        tokenizer.pad_token_id,
        plan_device(hp),
    )
    assert eval_loss is not None
    return Figures(tokens=tokens, seconds=seconds, eval_loss=eval_loss)


def main() -> int:
    parser = argparse.ArgumentParser(description="our trainer vs TRL SFTTrainer defaults")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument(
        "--presets", nargs="+", default=["tiny", "small-4m"], choices=sorted(PRESETS)
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    train = read_jsonl(DATA / "train.jsonl")[0]
    validation = read_jsonl(DATA / "validation.jsonl")[0]
    texts = texts_from_jsonl([DATA / "train.jsonl", DATA / "validation.jsonl"])
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        for preset in args.presets:
            model_dir = build_tiny_model(Path(scratch) / preset, texts, spec=PRESETS[preset])
            params = count_parameters(model_dir)
            transformers.set_seed(0)
            ours = run_ours(model_dir, train, validation, args.epochs)
            transformers.set_seed(0)
            trl = run_trl(
                model_dir, train, validation, args.epochs, Path(scratch) / f"trl-{preset}"
            )
            results.append(
                {
                    "model": preset,
                    "parameters": params,
                    "ours": ours.__dict__ | {"tokens_per_second": ours.tokens_per_second},
                    "trl": trl.__dict__ | {"tokens_per_second": trl.tokens_per_second},
                    "speedup": ours.tokens_per_second / trl.tokens_per_second,
                }
            )

    print(f"\ndata: {len(train)} train / {len(validation)} validation rows, epochs={args.epochs},")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, 1 CPU thread\n")
    header = (
        f"{'model':<10} {'params':>10} {'trainer':<6} {'tokens':>8} {'seconds':>8}"
        f" {'tokens/s':>9} {'eval_loss':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for name in ("ours", "trl"):
            f = r[name]
            print(
                f"{r['model']:<10} {r['parameters']:>10,} {name:<6} {f['tokens']:>8} "
                f"{f['seconds']:>8.2f} {f['tokens_per_second']:>9.0f} {f['eval_loss']:>9.4f}"
            )
        verdict = "lower or equal" if r["ours"]["eval_loss"] <= r["trl"]["eval_loss"] else "HIGHER"
        print(
            f"{'':<10} speedup ours/TRL: {r['speedup']:.2f}x tokens/s; our eval loss is {verdict}\n"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
