"""GPU benchmark of this project's trainer: LoRA tokens/s, MFU and peak memory, 1 GPU and all GPUs.

    make bench-train-gpu                           # NVIDIA GPUs: < 8 min on one H200
    python3 benchmarks/bench_train_gpu.py --smoke  # CPU, a tiny model, seconds: checks the script

Not a test: it prints figures as it goes and a table at the end. Nothing is downloaded: two
Llama-shaped models (~0.5B and ~1.5B parameters, vocabulary 32000) are built from a config with
random weights and saved in bf16; the data is synthetic packed chat rows -- every row exactly
`row length` tokens of samples with their own position runs (a lognormal length mix, the first
35% of each sample a prompt without loss), as `llm_sft.packing` produces them.

Every configuration runs the real training code (`llm_sft`: plan_device, build_engine, Trainer)
with LoRA r=16 on all linear layers, bf16 autocast, gradient checkpointing off, fused AdamW, no
checkpoints: `warmup` optimizer steps (kernel selection, compilation), then `steps` timed ones.

- tokens/s: input tokens of the timed steps / their wall time (the trainer synchronises the GPU
  every step), over all GPUs; per GPU = / world size.
- MFU: model FLOPs / (time x peak dense bf16 FLOP/s of the detected GPU x GPUs). Model FLOPs
  count what LoRA training needs: per token 4 x the frozen matmul weights (forward, and the
  input gradients; frozen weights get no weight gradients) + 6 x the LoRA weights, plus causal
  attention within each packed sample, 6 x L^2 x hidden per layer for a sample of L tokens
  (the work outside each sample's own block, which a dense mask computes and discards, is not
  counted). Recomputation is not counted (checkpointing is off anyway).
- peak memory: torch.cuda.max_memory_allocated over the timed steps (the largest of the GPUs).

Configurations, in order (each OOM or error is reported and the run moves on; a configuration
that would not finish inside the time budget is skipped and says so):
1. 1 GPU: 1.5B and 0.5B, sdpa, rows of 2048 tokens, 8 rows per micro-batch (16k tokens).
2. all GPUs, DDP, then FSDP (fully_shard), 1.5B: torchrun, one process per GPU. On a machine
   with one GPU these run with world size 1 and the table says so: they exercise the wrappers
   and their overhead, not scaling.
3. attention for packed rows, 1.5B on 1 GPU: flex_attention (and flash_attention_2 where the
   flash-attn package is installed; it is not in the pinned stack) at 2048-token rows, then
   sdpa vs flex_attention at 8192-token rows (2 rows, long context).
4. 1.5B, sdpa, with the decoder layers compiled (torch.compile, one compile shared by the
   layers), if the budget allows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training_code"))

RESULT_PREFIX = "BENCH_RESULT "

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets. Matched
# in order against torch.cuda.get_device_name(); first match wins.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("H20", 148e12),
    ("B200", 2250e12),
    ("B100", 1750e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 125e12),
    ("A10", 125e12),
    ("RTX 6000 Ada", 364e12),
    ("A6000", 155e12),
)


@dataclass(frozen=True)
class ModelSize:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_weights(self) -> int:
        """Weights of every matmul: attention and MLP projections of every layer, and the head."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        layer = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        layer += 3 * self.hidden * self.intermediate
        return self.layers * layer + self.hidden * self.vocab

    def parameters(self) -> int:
        return (
            self.linear_weights() + self.hidden * self.vocab + (2 * self.layers + 1) * self.hidden
        )

    def lora_weights(self, r: int) -> int:
        """LoRA r on all linear layers of the decoder (peft's all-linear leaves the head out)."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * r * per_layer


SIZES = {
    "0.5b": ModelSize("0.5B", hidden=1024, layers=24, heads=16, kv_heads=8, intermediate=4608),
    "1.5b": ModelSize("1.5B", hidden=2048, layers=28, heads=16, kv_heads=8, intermediate=5632),
    "tiny": ModelSize(
        "tiny", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512
    ),
}
LORA_R = 16


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    label: str
    size: str
    strategy: str  # single | ddp | fsdp
    attention: str
    row_length: int
    rows_per_micro_batch: int
    compile: bool = False
    estimate_seconds: float = 30.0  # for the time budget (first compile included)


def say(text: str) -> None:
    print(text, flush=True)


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


# --- the worker side: runs configurations in this process (under torchrun or not) -----------


def synthetic_rows(
    count: int, length: int, vocab: int, seed: int
) -> tuple[list[Any], list[list[int]]]:
    """`count` packed rows of exactly `length` tokens, and each row's sample lengths."""
    import torch

    from llm_sft.packing import Row

    rng = random.Random(seed)
    ids = torch.randint(3, vocab, (count * length,), generator=torch.Generator().manual_seed(seed))
    flat = ids.tolist()
    median = max(16, length // 4)
    shortest = min(32, length)
    rows: list[Any] = []
    samples: list[list[int]] = []
    for index in range(count):
        lengths: list[int] = []
        left = length
        while left > 0:
            size = int(min(length, max(shortest, rng.lognormvariate(math.log(median), 0.7))))
            size = min(size, left)
            if left - size < shortest:
                size = left
            lengths.append(size)
            left -= size
        tokens = flat[index * length : (index + 1) * length]
        labels: list[int] = []
        positions: list[int] = []
        for size in lengths:
            prompt = max(1, int(size * 0.35))
            start = len(labels)
            labels += [-100] * prompt + tokens[start + prompt : start + size]
            positions += list(range(size))
        rows.append(Row(tokens, labels, positions))
        samples.append(lengths)
    return rows, samples


def model_flops(size: ModelSize, samples: list[list[int]]) -> float:
    tokens = sum(sum(s) for s in samples)
    per_token = 4 * size.linear_weights() + 6 * size.lora_weights(LORA_R)
    attention = 6 * size.hidden * size.layers * sum(n * n for s in samples for n in s)
    return per_token * tokens + attention


def _compile_layers(engine: Any) -> int:
    names = set(getattr(engine.model.get_base_model(), "_no_split_modules", None) or [])
    layers = [m for m in engine.model.modules() if type(m).__name__ in names]
    for layer in layers:
        layer.compile()
    return len(layers)


def run_config(config: Config, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from llm_sft import distributed
    from llm_sft.distributed import DistContext, all_reduce_max
    from llm_sft.hyperparameters import parse_hyperparameters
    from llm_sft.modeling import BaseModel, plan_device
    from llm_sft.parallel import build_engine
    from llm_sft.trainer import Trainer

    ctx = DistContext.from_env()
    size = SIZES[config.size]
    cuda = torch.cuda.is_available()
    hp = parse_hyperparameters(
        {
            "model_id": str(model_dir),
            "max_steps": args.warmup,
            "per_device_train_batch_size": config.rows_per_micro_batch,
            "max_seq_length": config.row_length,
            "lora_r": LORA_R,
            "lora_alpha": 2 * LORA_R,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.0,
            "bf16": cuda,
            "gradient_checkpointing": False,
            "save_steps": 0,
            "logging_steps": 1000,
            "attn_implementation": config.attention,
            "distributed_strategy": config.strategy if config.strategy != "single" else "auto",
            "torch_threads": 0 if cuda else 1,
        }
    )
    base = BaseModel(path=str(model_dir), reference=config.size, source="local")
    plan = plan_device(hp, ctx)
    distributed.init_process_group(ctx, plan.device)
    world = ctx.world_size if config.strategy != "single" else 1
    engine = build_engine(hp, base, plan, ctx, config.strategy)  # type: ignore[arg-type]
    compiled = _compile_layers(engine) if config.compile else 0
    steps_total = args.warmup + args.steps
    rows, samples = synthetic_rows(
        steps_total * config.rows_per_micro_batch * world,
        config.row_length,
        size.vocab,
        seed=1234,
    )
    timed_rows = rows[args.warmup * config.rows_per_micro_batch * world :]
    timed_samples = samples[args.warmup * config.rows_per_micro_batch * world :]
    quiet = contextlib.redirect_stdout(io.StringIO())  # the trainer's METRIC lines
    started = time.perf_counter()
    with quiet:
        Trainer(engine, hp, plan, rows, [], 0, None, {}, ctx=ctx).train()
    warmup_seconds = time.perf_counter() - started
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed_hp = dataclasses.replace(hp, max_steps=args.steps)
    with contextlib.redirect_stdout(io.StringIO()):
        result = Trainer(engine, timed_hp, plan, timed_rows, [], 0, None, {}, ctx=ctx).train()
    peak = all_reduce_max(torch.cuda.max_memory_allocated() / 2**30) if cuda else None
    device_name = torch.cuda.get_device_name(plan.local_rank) if cuda else "cpu"
    peak_per_gpu = peak_flops(device_name) if cuda else None
    flops = model_flops(size, timed_samples)
    seconds = result.train_seconds
    mfu = flops / (seconds * peak_per_gpu * world) if peak_per_gpu and seconds > 0 else None
    return {
        "label": config.label,
        "model": size.name,
        "parameters": size.parameters(),
        "strategy": engine.strategy,
        "world_size": world,
        "attention": plan.attention or "sdpa",
        "compiled_layers": compiled,
        "row_length": config.row_length,
        "rows_per_micro_batch": config.rows_per_micro_batch,
        "tokens": result.tokens,
        "seconds": seconds,
        "tokens_per_second": result.tokens / seconds if seconds else None,
        "tokens_per_second_per_gpu": result.tokens / seconds / world if seconds else None,
        "mfu": mfu,
        "peak_memory_gib": peak,
        "warmup_seconds": warmup_seconds,
        "train_loss": result.train_loss,
        "device": device_name,
        "status": "ok",
    }


def _is_oom(error: BaseException) -> bool:
    return "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError"


def worker(args: argparse.Namespace) -> int:
    """Run the configurations given as JSON, print one result line each (rank 0)."""
    import torch
    import transformers

    from llm_sft.distributed import DistContext, shutdown

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # peft calls a property transformers 5 deprecates; nothing to act on (as in training.py).
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    ctx = DistContext.from_env()
    configs = [Config(**c) for c in json.loads(args.configs)]
    deadline = float(args.deadline)
    exit_code = 0
    for config in configs:
        left = deadline - time.time()
        if left < config.estimate_seconds:
            need = config.estimate_seconds
            result: dict[str, Any] = {
                "label": config.label,
                "status": f"skipped: {left:.0f} s of the budget left, needs ~{need:.0f} s",
            }
        else:
            try:
                result = run_config(config, Path(args.model_dir) / config.size, args)
            except Exception as error:  # report, move on (OOM included)
                status = "OOM" if _is_oom(error) else f"error: {type(error).__name__}: {error}"
                result = {"label": config.label, "status": status[:300]}
                if ctx.world_size > 1:
                    exit_code = 1  # the other processes may be stuck in a collective: end
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if ctx.is_main:
            say(RESULT_PREFIX + json.dumps(result))
        if exit_code:
            break
    shutdown()
    return exit_code


# --- the orchestrator: builds the models, starts the workers, prints the table ----------------


def build_model(size: ModelSize, folder: Path, device: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return
    config = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def start_worker(
    configs: list[Config], nproc: int | None, args: argparse.Namespace, deadline: float
) -> list[dict[str, Any]]:
    """One worker process (or torchrun with `nproc` processes); its output streams through."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--configs",
        json.dumps([dataclasses.asdict(c) for c in configs]),
        "--model-dir",
        str(args.work_dir),
        "--deadline",
        str(deadline),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if nproc is not None:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            *command[1:],
        ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if nproc is not None and args.smoke:
        env["OMP_NUM_THREADS"] = "1"
    results: list[dict[str, Any]] = []
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    # A hard stop a little after the deadline, should a worker hang (e.g. in a collective).
    timer_seconds = max(10.0, deadline - time.time() + 30)
    killer = _Killer(process, timer_seconds)
    for line in process.stdout:
        line = line.rstrip("\n")
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            results.append(result)
            say(f"  -> {_one_line(result)}")
        elif line.strip() and not _noise(line):
            say(f"     {line}")
    process.wait()
    killer.cancel()
    done = {r["label"] for r in results}
    for config in configs:
        if config.label not in done:
            why = (
                "killed at the time budget"
                if killer.fired
                else f"worker exited {process.returncode}"
            )
            results.append({"label": config.label, "status": f"no result ({why})"})
    return results


class _Killer:
    def __init__(self, process: subprocess.Popen[str], seconds: float) -> None:
        import threading

        self.fired = False
        self._process = process
        self._timer = threading.Timer(seconds, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def cancel(self) -> None:
        self._timer.cancel()


def _noise(line: str) -> bool:
    return any(
        marker in line
        for marker in ("OMP_NUM_THREADS", "*****", "torch/distributed/run.py", "warnings.warn")
    )


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _one_line(r: dict[str, Any]) -> str:
    try:
        return _format_one_line(r)
    except (KeyError, TypeError, ValueError):  # never lose a result to formatting
        return json.dumps(r)


def _format_one_line(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r['label']}: {r.get('status')}"
    mfu = f"{r['mfu'] * 100:.1f}%" if r["mfu"] is not None else "n/a"
    return (
        f"{r['label']}: {r['tokens_per_second']:,.0f} tokens/s"
        f" ({r['tokens_per_second_per_gpu']:,.0f}/GPU, world {r['world_size']}), MFU {mfu},"
        f" peak {_fmt(r['peak_memory_gib'], '.1f')} GiB, warm-up {r['warmup_seconds']:.0f} s"
    )


def _table_row(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r['label']:<34} {'':>71}  {r.get('status')}"
    mfu = f"{r['mfu'] * 100:.1f}%" if r["mfu"] is not None else "n/a"
    rows = f"{r['row_length']}x{r['rows_per_micro_batch']}"
    attention = r["attention"] + ("+compile" if r["compiled_layers"] else "")
    return (
        f"{r['label']:<34} {r['world_size']:>4} {attention:<17} {rows:>9}"
        f" {r['tokens_per_second']:>10,.0f} {r['tokens_per_second_per_gpu']:>10,.0f}"
        f" {mfu:>6} {_fmt(r['peak_memory_gib'], '8.1f'):>8}  ok"
    )


def print_table(results: list[dict[str, Any]], gpus: int, device: str) -> None:
    header = (
        f"{'configuration':<34} {'GPUs':>4} {'attention':<17} {'row x n':>9} {'tokens/s':>10}"
        f" {'tok/s/GPU':>10} {'MFU':>6} {'peak GiB':>8}  status"
    )
    say("")
    say(header)
    say("-" * len(header))
    for r in results:
        try:
            say(_table_row(r))
        except (KeyError, TypeError, ValueError):  # never lose a result to formatting
            say(json.dumps(r))
    if gpus == 1:
        say(
            "\nThis machine has 1 GPU: the DDP and FSDP rows ran with world size 1 (torchrun,"
            " one process); they measure the wrappers' overhead, not scaling."
        )
    say(f"device: {device}; MFU counts LoRA's model FLOPs (see the script's docstring).")


def plan_configs(
    args: argparse.Namespace, flash: bool
) -> tuple[list[Config], list[Config], list[Config], list[Config]]:
    if args.smoke:
        core = [Config("tiny single sdpa", "tiny", "single", "sdpa", 128, 2, estimate_seconds=5)]
        ddp = [Config("tiny ddp sdpa", "tiny", "ddp", "sdpa", 128, 2, estimate_seconds=5)]
        fsdp = [Config("tiny fsdp sdpa", "tiny", "fsdp", "sdpa", 128, 2, estimate_seconds=5)]
        extra = [Config("tiny single eager", "tiny", "single", "eager", 128, 2, estimate_seconds=5)]
        return core, ddp, fsdp, extra
    core = [
        Config("1.5B 1 GPU sdpa", "1.5b", "single", "sdpa", 2048, 8, estimate_seconds=40),
        Config("0.5B 1 GPU sdpa", "0.5b", "single", "sdpa", 2048, 8, estimate_seconds=25),
    ]
    ddp = [Config("1.5B all GPUs DDP sdpa", "1.5b", "ddp", "sdpa", 2048, 8, estimate_seconds=60)]
    fsdp = [Config("1.5B all GPUs FSDP sdpa", "1.5b", "fsdp", "sdpa", 2048, 8, estimate_seconds=70)]
    extra = [
        Config("1.5B 1 GPU flex", "1.5b", "single", "flex_attention", 2048, 8, estimate_seconds=120)
    ]
    if flash:
        extra.append(
            Config(
                "1.5B 1 GPU flash-attn 2",
                "1.5b",
                "single",
                "flash_attention_2",
                2048,
                8,
                estimate_seconds=40,
            )
        )
    extra += [
        Config("1.5B 1 GPU sdpa, 8k rows", "1.5b", "single", "sdpa", 8192, 2, estimate_seconds=40),
        Config(
            "1.5B 1 GPU flex, 8k rows",
            "1.5b",
            "single",
            "flex_attention",
            8192,
            2,
            estimate_seconds=120,
        ),
    ]
    if flash:
        extra.append(
            Config(
                "1.5B 1 GPU flash-attn 2, 8k rows",
                "1.5b",
                "single",
                "flash_attention_2",
                8192,
                2,
                estimate_seconds=40,
            )
        )
    if not args.no_compile:
        extra.append(
            Config(
                "1.5B 1 GPU sdpa compiled",
                "1.5b",
                "single",
                "sdpa",
                2048,
                8,
                compile=True,
                estimate_seconds=150,
            )
        )
    return core, ddp, fsdp, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: checks the script")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps first")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-train-gpu"))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.smoke else 10
    if args.warmup is None:
        args.warmup = 1 if args.smoke else 3
    if args.worker:
        return worker(args)

    started = time.time()
    deadline = started + args.budget
    import importlib.util

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        say("No CUDA GPU here: run it on a machine with NVIDIA GPUs, or with --smoke on CPU.")
        return 2
    gpus = torch.cuda.device_count() if cuda else 0
    device = torch.cuda.get_device_name(0) if cuda else "cpu (smoke)"
    peak = peak_flops(device) if cuda else None
    flash = importlib.util.find_spec("flash_attn") is not None
    peft_version = getattr(__import__("peft"), "__version__", "?")
    memory = f", {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB" if cuda else ""
    say(
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft_version};"
        f" {gpus} x {device}{memory}; peak bf16 {peak / 1e12 if peak else 'unknown'} TFLOP/s;"
        f" flash-attn {'installed' if flash else 'not installed'}"
    )
    say(f"{args.warmup} warm-up + {args.steps} timed steps per configuration")
    say(f"time budget {args.budget:.0f} s")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    sizes = ["tiny"] if args.smoke else ["0.5b", "1.5b"]
    for name in sizes:
        t = time.time()
        try:
            build_model(SIZES[name], args.work_dir / name, "cuda" if cuda else "cpu")
        except Exception as error:
            say(f"cannot build the {name} model: {type(error).__name__}: {error}")
            return 1
        built, size = time.time() - t, SIZES[name]
        say(f"model {size.name}: {size.parameters() / 1e9:.2f}B parameters ({built:.0f} s)")
    if cuda:
        torch.cuda.empty_cache()
    core, ddp, fsdp, extra = plan_configs(args, flash)
    world = gpus if cuda else 2
    results: list[dict[str, Any]] = []
    stages = [
        ("one GPU" if cuda else "one process", core, None),
        (f"DDP, world size {world}", ddp, world),
        (f"FSDP, world size {world}", fsdp, world),
        ("attention implementations and torch.compile", extra, None),
    ]
    for number, (title, configs, nproc) in enumerate(stages, start=1):
        say(f"\n[{number}/{len(stages)}] {title}")
        if configs is extra and not flash:
            say(
                "     flash_attention_2: flash-attn is not installed here (not in the pinned stack)"
            )
        try:
            results += start_worker(configs, nproc, args, deadline)
        except Exception as error:  # keep the figures gathered so far
            say(f"     stage failed: {type(error).__name__}: {error}")
            results += [{"label": c.label, "status": "stage failed"} for c in configs]
    print_table(results, gpus, device)
    say(f"total {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
