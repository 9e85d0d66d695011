"""Runs INSIDE the serving-compat environment (transformers/tokenizers at the serving pins).

Not a test module: tests/serving/test_serving_compat.py runs it as a subprocess with the
environment `make setup-serving` builds first on PYTHONPATH, so that `import transformers`
finds the serving container's version. It reads each model folder the way the container does
and writes what it saw:

- the versions that were imported (the test checks they are the serving pins);
- the config values TGI's Llama code reads: ``rope_theta`` (``getattr(config, "rope_theta",
  10000)``) and ``rope_scaling``;
- token ids of each text, with the Python tokenizer and through TGI's router path (the router
  saves the AutoTokenizer's tokenizer.json and encodes with the Rust tokenizer, special tokens
  added);
- the chat template the router reads (``chat_template`` in tokenizer_config.json) and each
  conversation rendered with the Python tokenizer;
- next-token logits for the long text (float32, saved with torch) and the per-token
  log-probabilities of the reference example's ids.

Usage: python probe.py SPEC.json OUT_DIR (SPEC: {"folders": {name: path}, "texts": [...],
"conversations": [...], "long_text": "...", "reference_ids": [...]}). Standard library, torch
and the serving stack only: nothing from this repository is imported.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    import huggingface_hub
    import safetensors
    import tokenizers
    import torch
    import transformers

    return {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "huggingface-hub": huggingface_hub.__version__,
        "safetensors": safetensors.__version__,
        "torch": torch.__version__,
        "transformers_file": transformers.__file__,
    }


def read_folder(folder: Path, spec: dict[str, Any], out: Path, name: str) -> dict[str, Any]:
    import tokenizers
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    seen: dict[str, Any] = {}
    config = AutoConfig.from_pretrained(folder)
    seen["rope_theta"] = getattr(config, "rope_theta", 10000)
    seen["rope_scaling"] = getattr(config, "rope_scaling", None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # what the container's router and shard would hit
        seen["tokenizer_error"] = f"{type(error).__name__}: {error}"
        tokenizer = None
    if tokenizer is not None:
        seen["tokenizer_class"] = type(tokenizer).__name__
        seen["ids"] = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in spec["texts"]]
        with tempfile.TemporaryDirectory() as router_dir:
            tokenizer.save_pretrained(router_dir)
            router = tokenizers.Tokenizer.from_file(str(Path(router_dir) / "tokenizer.json"))
            seen["router_ids"] = [
                router.encode(t, add_special_tokens=True).ids for t in spec["texts"]
            ]
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        seen["router_chat_template"] = tokenizer_config.get("chat_template")
        seen["chat"] = [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=g)
            for c in spec["conversations"]
            for g in (False, True)
        ]
        seen["long_ids"] = tokenizer(spec["long_text"], add_special_tokens=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ids = seen.get("long_ids") or spec["fallback_long_ids"]
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        torch.save(logits, out / f"logits-{name}.pt")
        reference = torch.tensor([spec["reference_ids"]])
        ref_logits = model(input_ids=reference).logits[0].float()
        logprobs = torch.log_softmax(ref_logits[:-1], -1).gather(1, reference[0, 1:, None])
        seen["reference_logprobs"] = [None, *logprobs.squeeze(1).tolist()]
    return seen


def main(argv: list[str]) -> int:
    spec_path, out_dir = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    result: dict[str, Any] = {"versions": versions(), "folders": {}}
    for name, folder in spec["folders"].items():
        try:
            result["folders"][name] = read_folder(Path(folder), spec, out_dir, name)
        except Exception:
            result["folders"][name] = {"error": traceback.format_exc(limit=3)}
    (out_dir / "probe.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
