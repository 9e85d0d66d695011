"""GPU memory fit, instance recommendation, training time and cost for a fine-tuning run.

Used by ``finetune estimate RUN.yaml`` (prints the estimate) and by the launch Lambda (refuses a
run that cannot fit before any money is spent). Standard library only.

Units: bytes internally, GiB (2**30 bytes) in every result; FLOPs; hours; USD.

Memory model (per GPU, peak during a training step)
---------------------------------------------------
Model state, by method (``N`` total parameters, ``T`` trainable LoRA parameters):

============  ==========================  =================  ==============================
method        weights                     gradients          optimizer (AdamW)
============  ==========================  =================  ==============================
``full``      bf16, 2 N                   bf16, 2 N          fp32 master + m + v, 12 N
``lora``      bf16 base 2 N + fp32 4 T    fp32, 4 T          fp32 m + v, 8 T
``qlora``     nf4 ~0.516 B/param (+ bf16  fp32, 4 T          fp32 m + v, 8 T
              embeddings/head) + fp32 4 T
============  ==========================  =================  ==============================

* ``full`` is mixed precision with bf16 weights and gradients and an fp32 master copy in the
  optimizer: 16 bytes per parameter, the figure from the ZeRO paper (Rajbhandari et al. 2020).
* LoRA adapters are fp32: PEFT upcasts adapter weights of a bf16 model
  (``autocast_adapter_dtype=True``), so trainable parameters also cost 16 bytes each.
* QLoRA stores every decoder ``nn.Linear`` as 4-bit NF4 with double-quantized block constants:
  4 + 0.127 bits per parameter (Dettmers et al. 2023, section 2), i.e. ~0.516 bytes/param in
  total. Embeddings and the output head stay bf16. One linear layer at a time is dequantized to
  bf16 for the matmul (counted as a transient).
* LoRA/QLoRA adapt ``all-linear`` (every ``nn.Linear`` in the decoder layers, not the output head):
  ``T = num_layers * sum(r * (in + out))`` over :meth:`ModelShape.linear_layers_per_layer`.

Multi-GPU (``multi_gpu``), default ``data_parallel``: LoRA and QLoRA runs are data parallel
(DDP), so every GPU holds the whole model. Full fine-tuning shards weights, gradients and
optimizer state over all GPUs of all instances (FSDP ``FULL_SHARD`` / DeepSpeed ZeRO-3); each GPU
also holds the gathered bf16 parameters of the embedding/head unit and of two decoder layers (the
current one and the prefetched one), and the unsharded gradients of the embedding/head unit and
one layer before they are reduce-scattered. ``layer_split`` instead models one process per
instance that spreads the decoder layers over the instance's GPUs (transformers
``device_map="auto"``, as a single-process training script does): the most loaded GPU holds
``ceil(layers / gpus)`` layers with their adapters and checkpoints, one embedding matrix and the
logits; the GPUs take turns, so it trains at the speed of one GPU.

The final merge: a QLoRA adapter is merged into a freshly loaded bf16 copy of the base
(``2 N`` bytes over GPU memory and host RAM); :func:`check_fit` warns when the instance cannot
hold it and :func:`recommend_instance` skips such instances. LoRA merges in place.

Activations (bf16, per GPU, micro-batch ``b``, sequence ``s``, hidden ``h``, SwiGLU intermediate
``I``, ``a`` heads, ``k`` routed experts per token, 1 for dense models):

* one decoder layer without recomputation keeps ``s*b*(17h + 8*I*k)`` bytes. This is the
  per-layer estimate of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", eq. 2: ``s*b*h*(34 + 5*a*s/h)``) adapted to a Llama-style layer: attention
  11h and the two norms 4h as in the paper, the MLP input 2h, and four bf16 tensors of width I for
  SwiGLU (gate and up projections, SiLU output, their product) instead of GeLU's two of width 4h;
  no dropout masks. The paper's ``5*a*s/h`` attention-score term is only added when attention
  scores are materialized (``eager`` attention); FlashAttention / PyTorch SDPA do not keep them.
* with gradient checkpointing (one checkpoint per decoder layer, as Hugging Face does) each layer
  keeps only its bf16 input, ``2*s*b*h`` bytes, and one layer is recomputed at a time in the
  backward pass.
* logits: ``s*b*vocab*10`` bytes at the loss (bf16 logits 2 + their fp32 upcast 4 + fp32
  log-softmax saved for backward 4), which dominates for 128k-256k vocabularies.

Peak activations = checkpoints (or every layer's activations) + max(logits, one recomputed
layer) with checkpointing, all layers + logits without.

Overhead: a fixed 1 GiB (CUDA context, cuBLAS/NCCL workspaces) plus 10% of everything except the
frozen base weights for caching-allocator fragmentation. The comparison is against the memory
the driver reports as usable (``gpu_usable_memory_gib``), not the nominal size.

Expect the estimate to be within ~15% of a measured peak; it errs high on logits for models with
a fused or chunked loss, and low when the training code adds extras (e.g. LoRA dropout copies).

Time model
----------
Training FLOPs = ``c * N_active * tokens`` with ``c = 6`` for full fine-tuning (forward 2N,
backward 4N; Kaplan et al. 2020) and ``c = 4`` for LoRA/QLoRA (the frozen weights need no weight
gradient, which saves 2N of the backward pass; adapter FLOPs are negligible). QLoRA is further
multiplied by 1.3 for dequantizing the 4-bit weights in every forward and backward (an assumption;
reported slowdowns of bitsandbytes QLoRA vs bf16 LoRA are ~20-40%). Time = FLOPs / (GPUs x dense
bf16 peak x MFU). ``mfu`` (model FLOPs utilization) folds in everything else: recomputation for
gradient checkpointing, padding, data loading, communication. 0.35 is typical of a well-tuned
single-node bf16 run; small micro-batches on A10G/L4 often achieve less.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Literal

from runspec.catalog import (
    InstanceSpec,
    ModelShape,
    UnknownInstanceType,
    get_catalog,
    get_instance,
    resolve_model_shape,
    training_instances,
)

__all__ = [
    "METHODS",
    "MULTI_GPU",
    "CostEstimate",
    "FitResult",
    "InstanceEstimate",
    "MemoryEstimate",
    "ModelShape",
    "RunEstimate",
    "UnknownInstanceType",
    "check_fit",
    "estimate_cost",
    "estimate_memory",
    "estimate_run",
    "estimate_training_hours",
    "lora_trainable_parameters",
    "merge_memory_needed_gib",
    "recommend_instance",
    "resolve_model_shape",
    "tokens_from_dataset",
    "tokens_from_steps",
]

Method = Literal["full", "lora", "qlora"]
METHODS: tuple[str, ...] = ("full", "lora", "qlora")
FitReason = Literal["fits", "out_of_memory", "no_gpu", "unsupported_accelerator"]
#: How several GPUs are used. ``data_parallel``: every GPU runs its own micro-batch; LoRA/QLoRA
#: replicate the model (DDP), full fine-tuning shards it (FSDP/ZeRO-3) over all GPUs of all
#: instances. ``layer_split``: one process per instance spreads the decoder layers over the
#: instance's GPUs (transformers ``device_map="auto"``); the GPUs work one after another, so
#: memory is divided but speed is that of one GPU.
MultiGpu = Literal["data_parallel", "layer_split"]
MULTI_GPU: tuple[str, ...] = ("data_parallel", "layer_split")

GIB = 1024**3
_FIELD = "training.instance_type"

# Bytes per element / parameter.
_BF16 = 2
_FP32 = 4
_FULL_WEIGHT_BYTES = _BF16  # bf16 working copy of the weights
_FULL_GRAD_BYTES = _BF16  # bf16 gradients
_FULL_OPTIMIZER_BYTES = 3 * _FP32  # fp32 master copy + AdamW m + v
_ADAPTER_WEIGHT_BYTES = _FP32  # PEFT keeps adapters of a bf16 model in fp32
_ADAPTER_GRAD_BYTES = _FP32
_ADAPTER_OPTIMIZER_BYTES = 2 * _FP32  # AdamW m + v; the adapter weights are already fp32
# NF4 with double quantization: 4 bits + 0.127 bits of block constants per parameter
# (Dettmers et al. 2023, QLoRA, section 2: 8-bit constants per 64-block, fp32 per 256 of those).
_NF4_BYTES_PER_PARAM = (4 + 0.127) / 8

# Activations (see module docstring).
_ATTN_NORM_BYTES_PER_H = 11 + 4 + 2  # attention 11h, two norms 4h, MLP input 2h
_SWIGLU_BYTES_PER_I = 4 * _BF16  # gate, up, SiLU(gate), product; bf16
_EAGER_SCORE_BYTES = 5  # Korthikanti: scores 2 + softmax 2 + dropout mask 1, per (a * s) element
_CHECKPOINT_BYTES_PER_H = _BF16  # one bf16 layer input per token per layer
_LOGIT_BYTES = _BF16 + _FP32 + _FP32  # bf16 logits, fp32 upcast, fp32 log-softmax

# Overhead.
_FIXED_OVERHEAD_GIB = 1.0  # CUDA context (~0.3-0.5 GiB with PyTorch) + cuBLAS/NCCL workspaces
_FRAGMENTATION = 0.10  # PyTorch caching allocator slack on everything but the frozen weights
_FSDP_PREFETCHED_LAYERS = 2  # FSDP keeps the current and the prefetched layer gathered
# Host RAM kept free for the OS, Python, tokenizer and data-loader workers during the merge.
_HOST_HEADROOM_GIB = 4.0

# Time.
_FLOPS_PER_PARAM_TOKEN = {"full": 6.0, "lora": 4.0, "qlora": 4.0}
_QLORA_DEQUANT_FACTOR = 1.3  # assumption: 4-bit dequantization slows QLoRA ~30% vs bf16 LoRA

#: Billable time added to each estimate for container image pull, base-model download and model
#: upload (SageMaker bills from the "Downloading" phase; instance provisioning is not billed).
#: An assumption: 10-20 minutes for a 7-8B model on a GPU instance.
DEFAULT_OVERHEAD_HOURS = 0.25
DEFAULT_MFU = 0.35

_METHOD_LABEL = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def _check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"training.method: {method!r} is not one of {', '.join(METHODS)}")
    return method  # type: ignore[return-value]


def _check_multi_gpu(multi_gpu: str) -> MultiGpu:
    if multi_gpu not in MULTI_GPU:
        raise ValueError(f"multi_gpu: {multi_gpu!r} is not one of {', '.join(MULTI_GPU)}")
    return multi_gpu  # type: ignore[return-value]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _rounded(value: Any) -> Any:
    """JSON-friendly copy: dataclasses to dicts, floats rounded to 4 decimals."""
    if is_dataclass(value) and not isinstance(value, type):
        return _rounded(asdict(value))
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory of one training step, per GPU, in GiB (2**30 bytes).

    ``shard_count`` is the number of GPUs the model state is sharded over (FSDP, ``full`` only),
    ``layer_split_gpus`` the number of GPUs one process spreads the layers over; the figures are
    for the most loaded GPU. ``total_gib`` = weights + gradients + optimizer + activations +
    overhead.
    """

    method: str
    sequence_length: int
    micro_batch_size: int
    lora_r: int | None
    gradient_checkpointing: bool
    shard_count: int
    layer_split_gpus: int
    trainable_parameters: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float
    total_gib: float

    def breakdown(self) -> str:
        """``weights 15.0, gradients 0.2, optimizer 0.3, activations 5.9, overhead 1.7``."""
        return (
            f"weights {self.weights_gib:.1f}, gradients {self.gradients_gib:.1f}, "
            f"optimizer {self.optimizer_gib:.1f}, activations {self.activations_gib:.1f}, "
            f"overhead {self.overhead_gib:.1f}"
        )

    def describe(self) -> str:
        """One line: the breakdown, the total per GPU and the settings it was computed for."""
        label = _METHOD_LABEL.get(self.method, self.method)
        if self.lora_r is not None:
            label += f" r={self.lora_r}"
        trainable = self.trainable_parameters / 1e6
        parts = [
            f"{label}, {trainable:,.1f}M trainable",
            f"seq {self.sequence_length} x micro-batch {self.micro_batch_size}",
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}",
        ]
        if self.shard_count > 1:
            parts.append(f"sharded over {self.shard_count} GPUs")
        if self.layer_split_gpus > 1:
            parts.append(f"layers split over {self.layer_split_gpus} GPUs")
        return f"~{self.total_gib:.1f} GiB per GPU ({self.breakdown()}; {'; '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        result: dict[str, Any] = _rounded(self)
        return result


def lora_trainable_parameters(shape: ModelShape, lora_r: int) -> int:
    """LoRA parameters for ``target_modules="all-linear"``: r x (in + out) per adapted linear."""
    _check_positive(lora_r=lora_r)
    per_layer = sum(lora_r * (i + o) for i, o in shape.linear_layers_per_layer())
    return per_layer * shape.num_layers


def _layer_activation_bytes(shape: ModelShape, tokens: int, seq: int, eager: bool) -> float:
    """Bytes one decoder layer keeps for backward without recomputation (see module docs)."""
    per_token = (
        _ATTN_NORM_BYTES_PER_H * shape.hidden_size
        + _SWIGLU_BYTES_PER_I * shape.intermediate_size * shape.experts_per_token
    )
    if eager:
        per_token += _EAGER_SCORE_BYTES * shape.num_attention_heads * seq
    return float(per_token * tokens)


def estimate_memory(
    shape: ModelShape,
    *,
    method: str,
    sequence_length: int,
    micro_batch_size: int,
    lora_r: int = 16,
    gradient_checkpointing: bool = True,
    shard_count: int = 1,
    layer_split_gpus: int = 1,
    attention_scores_materialized: bool = False,
) -> MemoryEstimate:
    """Peak memory of the most loaded GPU for one training step (model: module docstring).

    ``shard_count``: ``full`` only, FSDP/ZeRO-3 over that many GPUs. ``layer_split_gpus``: one
    process spreads the decoder layers over that many GPUs (transformers
    ``device_map="auto"``); the most loaded GPU holds ``ceil(layers / gpus)`` layers, their
    adapters and checkpoints, one embedding matrix (the input embedding on the first GPU, the
    output head on the last) and the logits or one recomputed layer. The two are exclusive; with
    neither, every GPU holds the whole model (single GPU or data parallel).
    ``attention_scores_materialized``: True for ``eager`` attention (adds Korthikanti's
    ``5*a*s`` bytes per token per layer); the default assumes FlashAttention / SDPA.
    """
    m = _check_method(method)
    _check_positive(
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        shard_count=shard_count,
        layer_split_gpus=layer_split_gpus,
    )
    if m != "full" and shard_count > 1:
        raise ValueError("shard_count > 1 is for method full (FSDP); LoRA/QLoRA replicate")
    if shard_count > 1 and layer_split_gpus > 1:
        raise ValueError("shard_count and layer_split_gpus are exclusive")
    n = float(shape.parameters)
    tokens = sequence_length * micro_batch_size
    embedding = float(min(shape.embedding_parameters, shape.parameters))
    # Per decoder layer, from the total so that derived shapes stay consistent with N.
    layer_params = max(n - embedding, 0.0) / shape.num_layers
    if layer_split_gpus > 1:
        layers = math.ceil(shape.num_layers / layer_split_gpus)
        # embedding and head sit on different GPUs (or are one tied matrix)
        non_layer = min(embedding, float(shape.vocab_size * shape.hidden_size))
    else:
        layers = shape.num_layers
        non_layer = embedding
    params_here = non_layer + layers * layer_params

    frozen = 0.0  # bytes excluded from the fragmentation allowance
    trainable = shape.parameters if m == "full" else lora_trainable_parameters(shape, lora_r)
    if m == "full":
        weights = _FULL_WEIGHT_BYTES * params_here / shard_count
        gradients = _FULL_GRAD_BYTES * params_here / shard_count
        optimizer = _FULL_OPTIMIZER_BYTES * params_here / shard_count
        if shard_count > 1:
            weights += _BF16 * (embedding + _FSDP_PREFETCHED_LAYERS * layer_params)
            gradients += _BF16 * (embedding + layer_params)
    else:
        adapters_here = trainable * layers / shape.num_layers
        if m == "lora":
            frozen = _BF16 * params_here
            transient = 0.0
        else:
            frozen = _NF4_BYTES_PER_PARAM * layers * layer_params + _BF16 * non_layer
            largest = max(i * o for i, o in shape.linear_layers_per_layer())
            transient = float(_BF16 * largest)  # one layer dequantized for its matmul
        weights = frozen + _ADAPTER_WEIGHT_BYTES * adapters_here + transient
        gradients = _ADAPTER_GRAD_BYTES * adapters_here
        optimizer = _ADAPTER_OPTIMIZER_BYTES * adapters_here

    layer = _layer_activation_bytes(shape, tokens, sequence_length, attention_scores_materialized)
    logits = float(_LOGIT_BYTES * tokens * shape.vocab_size)
    if gradient_checkpointing:
        checkpoints = float(_CHECKPOINT_BYTES_PER_H * shape.hidden_size * tokens * layers)
        activations = checkpoints + max(logits, layer)
    else:
        activations = layer * layers + logits

    state = weights + gradients + optimizer + activations
    overhead = _FIXED_OVERHEAD_GIB * GIB + _FRAGMENTATION * (state - frozen)
    total = state + overhead
    return MemoryEstimate(
        method=m,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=None if m == "full" else lora_r,
        gradient_checkpointing=gradient_checkpointing,
        shard_count=shard_count,
        layer_split_gpus=layer_split_gpus,
        trainable_parameters=trainable,
        weights_gib=weights / GIB,
        gradients_gib=gradients / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB,
        overhead_gib=overhead / GIB,
        total_gib=total / GIB,
    )


# ---------------------------------------------------------------------------------------------
# Fit


@dataclass(frozen=True)
class FitResult:
    """Whether a run fits an instance type, per GPU, with a one-line message naming the field.

    ``available_gib`` is the usable memory per GPU (0 without NVIDIA GPUs), ``needed_gib`` the
    estimated peak per GPU, ``headroom_gib`` their difference (negative when it does not fit).
    ``usd_per_hour`` / ``price_region``: on-demand price of one instance, when known.
    """

    instance_type: str
    fits: bool
    reason: FitReason
    method: str
    gpus_per_instance: int
    instance_count: int
    gpu_model: str | None
    gpu_memory_gib: float
    available_gib: float
    needed_gib: float
    headroom_gib: float
    memory: MemoryEstimate
    message: str
    suggestions: tuple[str, ...] = ()
    usd_per_hour: float | None = None
    price_region: str | None = None
    multi_gpu: str = "data_parallel"
    merge_memory_needed_gib: float = 0.0
    merge_memory_available_gib: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def merge_fits(self) -> bool:
        """The final adapter merge fits in GPU memory plus host RAM (merge_memory_needed_gib)."""
        return self.merge_memory_needed_gib <= self.merge_memory_available_gib

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        result: dict[str, Any] = _rounded(self)
        result["merge_fits"] = self.merge_fits
        return result


def merge_memory_needed_gib(shape: ModelShape, method: str) -> float:
    """Memory (GPUs and host RAM together) the merge of the adapter needs at the end, GiB.

    QLoRA: 4-bit weights cannot absorb the adapter without loss, so a fresh bf16 copy of the base
    is loaded over the GPUs and then host RAM (``device_map="auto"``) once training has freed its
    memory: 2 bytes x parameters + 4 GiB of host headroom. LoRA merges in place in GPU memory and
    full fine-tuning has nothing to merge: 0.
    """
    if _check_method(method) != "qlora":
        return 0.0
    return _BF16 * shape.parameters / GIB + _HOST_HEADROOM_GIB


def _merge_capacity_gib(spec: InstanceSpec) -> float:
    gpu = spec.gpus * spec.gpu_usable_memory_gib if spec.has_nvidia_gpu else 0.0
    return spec.memory_gib + gpu


@dataclass(frozen=True)
class _FitInputs:
    shape: ModelShape
    method: Method
    sequence_length: int
    micro_batch_size: int
    lora_r: int
    gradient_checkpointing: bool
    instance_count: int
    multi_gpu: MultiGpu


def _memory_for(spec: InstanceSpec, inputs: _FitInputs) -> MemoryEstimate:
    gpus = max(spec.gpus, 1)
    split = gpus if inputs.multi_gpu == "layer_split" else 1
    shard = gpus * inputs.instance_count if inputs.method == "full" and split == 1 else 1
    return estimate_memory(
        inputs.shape,
        method=inputs.method,
        sequence_length=inputs.sequence_length,
        micro_batch_size=inputs.micro_batch_size,
        lora_r=inputs.lora_r,
        gradient_checkpointing=inputs.gradient_checkpointing,
        shard_count=shard,
        layer_split_gpus=split,
    )


def _fits(spec: InstanceSpec, inputs: _FitInputs) -> bool:
    if not (spec.has_nvidia_gpu and spec.training_supported):
        return False
    return _memory_for(spec, inputs).total_gib <= spec.gpu_usable_memory_gib


def _with(inputs: _FitInputs, **changes: Any) -> _FitInputs:
    return replace(inputs, **changes)


def _cheapest_fitting(
    inputs: _FitInputs,
    region: str,
    candidates: Iterable[InstanceSpec] | None = None,
    require_merge_fit: bool = True,
) -> tuple[InstanceSpec, float, str] | None:
    """Cheapest (on-demand, ``region``) training-capable instance that fits ``inputs``.

    Only types the catalog prices in ``region`` are considered (i.e. offered there); when the
    catalog prices none there (unknown region), us-east-1 prices are used for all. With
    ``require_merge_fit``, types too small for the final QLoRA merge are skipped.
    """
    source = training_instances() if candidates is None else tuple(candidates)
    merge = merge_memory_needed_gib(inputs.shape, inputs.method) if require_merge_fit else 0.0
    pool = [s for s in source if s.training_supported and _merge_capacity_gib(s) >= merge]
    catalog = get_catalog()
    in_region = [s for s in pool if region in s.usd_per_hour]
    price_region = region if in_region else catalog.default_region
    priced = [
        (s.usd_per_hour[price_region], s.gpus, s.name, s)
        for s in (in_region or pool)
        if price_region in s.usd_per_hour
    ]
    for price, _gpus, _name, spec in sorted(priced, key=lambda t: t[:3]):
        if _fits(spec, inputs):
            return spec, price, price_region
    return None


def _gpu_phrase(spec: InstanceSpec) -> str:
    plural, each = ("s", " each") if spec.gpus > 1 else ("", "")
    return (
        f"{spec.gpus}×{spec.gpu_memory_gib:g} GiB GPU{plural} "
        f"({spec.gpu_model}, {spec.gpu_usable_memory_gib:.1f} GiB usable{each})"
    )


def _suggest(spec: InstanceSpec, inputs: _FitInputs, region: str, *, can_run: bool) -> list[str]:
    """Changes that would make the run fit, cheapest to apply first."""
    suggestions: list[str] = []
    if can_run:
        if inputs.method == "full":
            if _fits(spec, _with(inputs, method="lora")):
                suggestions.append("method lora/qlora")
            elif _fits(spec, _with(inputs, method="qlora")):
                suggestions.append("method qlora")
        elif inputs.method == "lora" and _fits(spec, _with(inputs, method="qlora")):
            suggestions.append("method qlora")
        if inputs.micro_batch_size > 1 and _fits(spec, _with(inputs, micro_batch_size=1)):
            suggestions.append("micro_batch_size 1 (raise gradient_accumulation_steps)")
        if not inputs.gradient_checkpointing and _fits(
            spec, _with(inputs, gradient_checkpointing=True)
        ):
            suggestions.append("gradient_checkpointing on")
    best = _cheapest_fitting(inputs, region)
    if best is not None and best[0].name != spec.name:
        suggestions.append(best[0].name)
    if not suggestions:
        more = " or more instances" if inputs.method == "full" else " or method qlora"
        if inputs.method == "qlora":
            more = ""
        suggestions.append(f"a shorter sequence_length{more} (no catalogued instance fits)")
    return suggestions


def _a_size(size: str) -> str:
    """``a 7.2B`` / ``an 8.0B`` / ``an 11B``: the article as the number is spoken."""
    spoken_vowel = size.startswith("8") or re.match(r"1[18](?:\D|$)", size) is not None
    return f"{'an' if spoken_vowel else 'a'} {size}"


def _run_phrase(inputs: _FitInputs) -> str:
    size = _a_size(inputs.shape.size_label())
    if inputs.method == "full":
        return f"full fine-tuning of {size} model"
    return f"{_METHOD_LABEL[inputs.method]} on {size} model"


def _fit(spec: InstanceSpec, inputs: _FitInputs, region: str) -> FitResult:
    memory = _memory_for(spec, inputs)
    priced = spec.price(region, get_catalog().default_region)
    price, price_region = priced if priced else (None, None)
    quoted = f"{_FIELD}: {spec.name!r}"
    run = _run_phrase(inputs)
    needed = memory.total_gib
    count = f" (×{inputs.instance_count} instances)" if inputs.instance_count > 1 else ""

    if not spec.has_nvidia_gpu or not spec.training_supported:
        if spec.accelerator_type == "neuron":
            reason: FitReason = "unsupported_accelerator"
            has = (
                f"has AWS {spec.gpu_model} (Neuron) accelerators, which this training code "
                "cannot use (it needs NVIDIA GPUs)"
            )
        else:
            reason = "no_gpu"
            has = "has no GPU"
        suggestions = _suggest(spec, inputs, region, can_run=False)
        message = (
            f"{quoted} {has}; {run} needs ~{needed:.1f} GiB of GPU memory; "
            f"use {' or '.join(suggestions)}"
        )
        return FitResult(
            instance_type=spec.name,
            fits=False,
            reason=reason,
            method=inputs.method,
            gpus_per_instance=spec.gpus,
            instance_count=inputs.instance_count,
            gpu_model=spec.gpu_model,
            gpu_memory_gib=spec.gpu_memory_gib,
            available_gib=0.0,
            needed_gib=needed,
            headroom_gib=-needed,
            memory=memory,
            message=message,
            suggestions=tuple(suggestions),
            usd_per_hour=price,
            price_region=price_region,
            multi_gpu=inputs.multi_gpu,
            merge_memory_needed_gib=merge_memory_needed_gib(inputs.shape, inputs.method),
            merge_memory_available_gib=_merge_capacity_gib(spec),
        )

    available = spec.gpu_usable_memory_gib
    fits = needed <= available
    merge_needed = merge_memory_needed_gib(inputs.shape, inputs.method)
    merge_available = _merge_capacity_gib(spec)
    warnings: list[str] = []
    if merge_needed > merge_available:
        warnings.append(
            f"{quoted}: merging the QLoRA adapter loads a bf16 copy of the base model "
            f"(~{merge_needed:.0f} GiB) into GPU memory and RAM, but the instance has "
            f"~{merge_available:.0f} GiB in all; training would fit but the merge would fail"
        )
    sharded = ""
    if memory.shard_count > 1:
        sharded = f" sharded over {memory.shard_count} GPUs"
    elif memory.layer_split_gpus > 1:
        sharded = f" with layers split over {memory.layer_split_gpus} GPUs"
    suggestions = [] if fits else _suggest(spec, inputs, region, can_run=True)
    if fits:
        message = (
            f"{quoted}{count} fits: {run}{sharded} needs ~{needed:.1f} of "
            f"{available:.1f} GiB usable per GPU ({spec.gpus}×{spec.gpu_memory_gib:g} GiB "
            f"{spec.gpu_model}; {memory.breakdown()}), {available - needed:.1f} GiB headroom"
        )
    else:
        message = (
            f"{quoted}{count} has {_gpu_phrase(spec)}; {run}{sharded} needs ~{needed:.1f} GiB "
            f"per GPU ({memory.breakdown()}); use {' or '.join(suggestions)}"
        )
    return FitResult(
        instance_type=spec.name,
        fits=fits,
        reason="fits" if fits else "out_of_memory",
        method=inputs.method,
        gpus_per_instance=spec.gpus,
        instance_count=inputs.instance_count,
        gpu_model=spec.gpu_model,
        gpu_memory_gib=spec.gpu_memory_gib,
        available_gib=available,
        needed_gib=needed,
        headroom_gib=available - needed,
        memory=memory,
        message=message,
        suggestions=tuple(suggestions),
        usd_per_hour=price,
        price_region=price_region,
        multi_gpu=inputs.multi_gpu,
        merge_memory_needed_gib=merge_needed,
        merge_memory_available_gib=merge_available,
        warnings=tuple(warnings),
    )


def _inputs(
    shape: ModelShape,
    method: str,
    sequence_length: int,
    micro_batch_size: int,
    lora_r: int,
    gradient_checkpointing: bool | None,
    instance_count: int,
    multi_gpu: str,
) -> _FitInputs:
    _check_positive(
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        instance_count=instance_count,
    )
    return _FitInputs(
        shape=shape,
        method=_check_method(method),
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        # None: on, as the training code does on GPU
        gradient_checkpointing=True if gradient_checkpointing is None else gradient_checkpointing,
        instance_count=instance_count,
        multi_gpu=_check_multi_gpu(multi_gpu),
    )


def check_fit(
    instance_type: str,
    shape: ModelShape,
    *,
    method: str,
    sequence_length: int,
    micro_batch_size: int,
    lora_r: int = 16,
    gradient_checkpointing: bool | None = None,
    instance_count: int = 1,
    region: str = "us-east-1",
    multi_gpu: str = "data_parallel",
) -> FitResult:
    """Does the run fit ``instance_type``? Per GPU, against the usable GPU memory.

    ``gradient_checkpointing=None`` means on (the training code enables it on GPU). ``region``
    only picks prices for the suggested alternative. ``multi_gpu``: see :data:`MultiGpu`. A
    QLoRA run whose final merge would not fit still ``fits`` but carries a warning. Raises
    :class:`UnknownInstanceType` for a type that is not in the catalog and ``ValueError`` for bad
    arguments. An instance without NVIDIA GPUs (CPU, Neuron) never fits; its message says why
    and what to use instead.
    """
    spec = get_instance(instance_type, field=_FIELD)
    inputs = _inputs(
        shape, method, sequence_length, micro_batch_size, lora_r, gradient_checkpointing,
        instance_count, multi_gpu,
    )  # fmt: skip
    return _fit(spec, inputs, region)


def recommend_instance(
    shape: ModelShape,
    *,
    method: str,
    sequence_length: int,
    micro_batch_size: int,
    lora_r: int = 16,
    gradient_checkpointing: bool | None = None,
    region: str = "us-east-1",
    instance_count: int = 1,
    candidates: Iterable[str] | None = None,
    require_merge_fit: bool = True,
    multi_gpu: str = "data_parallel",
) -> FitResult | None:
    """Cheapest training-capable instance type (on-demand $/h in ``region``) the run fits.

    ``candidates`` restricts the choice (e.g. an environment's allowed training types; unknown
    names raise :class:`UnknownInstanceType`). Types the catalog does not price in ``region`` are
    skipped; for a region the catalog does not price at all, us-east-1 prices are used and the
    result's ``price_region`` says so. ``require_merge_fit`` (default) also skips types whose GPU
    memory plus RAM cannot hold the final QLoRA merge (:func:`merge_memory_needed_gib`).
    Ties go to fewer GPUs. ``None`` when nothing fits.
    """
    inputs = _inputs(
        shape, method, sequence_length, micro_batch_size, lora_r, gradient_checkpointing,
        instance_count, multi_gpu,
    )  # fmt: skip
    pool = None if candidates is None else [get_instance(c, field=_FIELD) for c in candidates]
    best = _cheapest_fitting(inputs, region, pool, require_merge_fit)
    if best is None:
        return None
    return _fit(best[0], inputs, region)


# ---------------------------------------------------------------------------------------------
# Time and cost


def tokens_from_steps(
    max_steps: int, micro_batch: int, grad_accum: int, seq_len: int, data_parallel_ranks: int
) -> int:
    """Tokens processed by ``max_steps`` optimizer steps with full (packed) sequences.

    ``data_parallel_ranks`` = GPUs per instance x instances (every GPU runs its own micro-batch).
    An upper bound when sequences are padded rather than packed.
    """
    _check_positive(
        max_steps=max_steps,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        seq_len=seq_len,
        data_parallel_ranks=data_parallel_ranks,
    )
    return max_steps * micro_batch * grad_accum * seq_len * data_parallel_ranks


def tokens_from_dataset(rows: int, mean_tokens_per_row: float, epochs: float = 1.0) -> int:
    """Tokens processed by ``epochs`` passes over ``rows`` examples of ``mean_tokens_per_row``."""
    if rows < 0 or mean_tokens_per_row < 0 or epochs < 0:
        raise ValueError("rows, mean_tokens_per_row and epochs must be >= 0")
    return math.ceil(rows * mean_tokens_per_row * epochs)


def estimate_training_hours(
    shape: ModelShape,
    *,
    method: str,
    tokens: int,
    instance_type: str,
    instance_count: int = 1,
    mfu: float = DEFAULT_MFU,
    multi_gpu: str = "data_parallel",
) -> float:
    """Compute time of the training loop, hours (no startup or upload; see module docstring).

    ``FLOPs = c * N_active * tokens`` (c = 6 full, 4 LoRA/QLoRA; x1.3 for QLoRA) divided by
    ``GPUs x bf16 dense TFLOPS x mfu``, where GPUs counts every GPU of every instance for
    ``data_parallel`` but one per instance for ``layer_split`` (its GPUs take turns). Raises
    ``ValueError`` for an instance without NVIDIA GPUs.
    """
    m = _check_method(method)
    strategy = _check_multi_gpu(multi_gpu)
    _check_positive(instance_count=instance_count)
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    spec = get_instance(instance_type, field=_FIELD)
    if not (spec.has_nvidia_gpu and spec.training_supported):
        raise ValueError(f"{_FIELD}: {spec.name!r} has no NVIDIA GPU to train on")
    flops = _FLOPS_PER_PARAM_TOKEN[m] * shape.active_parameters * tokens
    if m == "qlora":
        flops *= _QLORA_DEQUANT_FACTOR
    working_gpus = (spec.gpus if strategy == "data_parallel" else 1) * instance_count
    throughput = working_gpus * spec.bf16_tflops_per_gpu * 1e12 * mfu
    return flops / throughput / 3600


@dataclass(frozen=True)
class CostEstimate:
    """Cost of ``hours`` on ``instance_count`` instances, USD.

    ``price_region`` is the region whose price was used; it differs from ``region`` when the
    catalog has no price there (then ``note`` says so). ``usd_per_instance_hour`` is after the
    spot discount when ``spot``.
    """

    instance_type: str
    region: str
    price_region: str
    spot: bool
    on_demand_usd_per_instance_hour: float
    spot_discount: float | None
    usd_per_instance_hour: float
    hours: float
    instance_count: int
    total_usd: float
    price_kind: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        result: dict[str, Any] = _rounded(self)
        return result


def estimate_cost(
    instance_type: str,
    region: str,
    hours: float,
    instance_count: int = 1,
    spot: bool = False,
) -> CostEstimate:
    """``hours x instance_count x price``; spot applies the catalog's assumed discount.

    Never fails on the region: without a catalog price there, the us-east-1 price is used and
    ``price_region`` / ``note`` say so. Raises :class:`UnknownInstanceType` for unknown types.
    """
    _check_positive(instance_count=instance_count)
    if hours < 0 or not math.isfinite(hours):
        raise ValueError(f"hours must be a finite number >= 0, got {hours}")
    catalog = get_catalog()
    spec = get_instance(instance_type)
    priced = spec.price(region, catalog.default_region)
    notes: list[str] = []
    if priced is None:  # not priced in the default region either: take any listed region
        fallback_region, fallback_price = next(iter(spec.usd_per_hour.items()))
        priced = (fallback_price, fallback_region)
    on_demand, price_region = priced
    if price_region != region:
        notes.append(
            f"no {spec.name} price for {region!r} in the catalog (as of {catalog.as_of}); "
            f"used the {price_region} price"
        )
    if spec.price_kind != "training":
        notes.append(f"{spec.name} price is the SageMaker {spec.price_kind} price")
    discount = catalog.spot_discount(spec) if spot else None
    rate = on_demand * (1 - discount) if discount is not None else on_demand
    return CostEstimate(
        instance_type=spec.name,
        region=region,
        price_region=price_region,
        spot=spot,
        on_demand_usd_per_instance_hour=on_demand,
        spot_discount=discount,
        usd_per_instance_hour=rate,
        hours=hours,
        instance_count=instance_count,
        total_usd=rate * hours * instance_count,
        price_kind=spec.price_kind,
        note="; ".join(notes),
    )


# ---------------------------------------------------------------------------------------------
# Whole-run estimate


@dataclass(frozen=True)
class InstanceEstimate:
    """Fit, time and cost of the run on one instance type.

    ``training_hours`` is the compute time of the loop; ``billable_hours`` adds the fixed
    per-job overhead (image pull, model download, upload). Both ``None`` when the instance cannot
    train (no NVIDIA GPU); the costs are then ``None`` too.
    """

    fit: FitResult
    training_hours: float | None
    billable_hours: float | None
    on_demand: CostEstimate | None
    spot: CostEstimate | None


@dataclass(frozen=True)
class RunEstimate:
    """What ``finetune estimate`` prints: the shape, the requested instance and a recommendation.

    ``recommended`` is the cheapest instance type per hour that fits (``None`` if none does); it
    may be the requested one.
    """

    model: ModelShape
    method: str
    sequence_length: int
    micro_batch_size: int
    lora_r: int | None
    gradient_checkpointing: bool
    instance_count: int
    multi_gpu: str
    region: str
    tokens: int
    mfu: float
    overhead_hours: float
    requested: InstanceEstimate
    recommended: InstanceEstimate | None
    catalog_as_of: str
    notes: tuple[str, ...] = field(default=())

    @property
    def memory(self) -> MemoryEstimate:
        """Memory estimate on the requested instance."""
        return self.requested.fit.memory

    @property
    def fit(self) -> FitResult:
        """Fit on the requested instance."""
        return self.requested.fit

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (floats rounded to 4 decimals)."""
        result: dict[str, Any] = _rounded(self)
        result["model"]["approximate"] = self.model.approximate
        result["model"]["size"] = self.model.size_label()
        return result


def _instance_estimate(
    fit: FitResult,
    shape: ModelShape,
    *,
    tokens: int,
    region: str,
    mfu: float,
    overhead_hours: float,
) -> InstanceEstimate:
    if fit.reason in ("no_gpu", "unsupported_accelerator"):
        return InstanceEstimate(fit, None, None, None, None)
    hours = estimate_training_hours(
        shape,
        method=fit.method,
        tokens=tokens,
        instance_type=fit.instance_type,
        instance_count=fit.instance_count,
        mfu=mfu,
        multi_gpu=fit.multi_gpu,
    )
    billable = hours + overhead_hours
    return InstanceEstimate(
        fit=fit,
        training_hours=hours,
        billable_hours=billable,
        on_demand=estimate_cost(fit.instance_type, region, billable, fit.instance_count),
        spot=estimate_cost(fit.instance_type, region, billable, fit.instance_count, spot=True),
    )


def estimate_run(
    model: str | ModelShape,
    *,
    method: str,
    instance_type: str,
    sequence_length: int,
    micro_batch_size: int,
    tokens: int,
    instance_count: int = 1,
    lora_r: int = 16,
    gradient_checkpointing: bool | None = None,
    region: str = "us-east-1",
    parameters_billions: float | None = None,
    mfu: float = DEFAULT_MFU,
    overhead_hours: float = DEFAULT_OVERHEAD_HOURS,
    candidates: Iterable[str] | None = None,
    multi_gpu: str = "data_parallel",
) -> RunEstimate:
    """Shape, memory, fit on ``instance_type``, the cheapest fitting alternative, time and cost.

    ``model`` is a base-model id / S3 path (resolved with ``parameters_billions``, see
    :func:`resolve_model_shape`) or a :class:`ModelShape`. ``tokens``: see
    :func:`tokens_from_steps` / :func:`tokens_from_dataset`. ``candidates`` restricts the
    recommendation (e.g. to an environment's allowed training types). ``multi_gpu``: how the
    training code uses several GPUs (:data:`MultiGpu`).
    """
    shape = model if isinstance(model, ModelShape) else resolve_model_shape(
        model, parameters_billions
    )  # fmt: skip
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if overhead_hours < 0:
        raise ValueError(f"overhead_hours must be >= 0, got {overhead_hours}")
    fit = check_fit(
        instance_type,
        shape,
        method=method,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        gradient_checkpointing=gradient_checkpointing,
        instance_count=instance_count,
        region=region,
        multi_gpu=multi_gpu,
    )
    best = recommend_instance(
        shape,
        method=method,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        gradient_checkpointing=gradient_checkpointing,
        region=region,
        instance_count=instance_count,
        candidates=candidates,
        multi_gpu=multi_gpu,
    )
    common: dict[str, Any] = {
        "tokens": tokens,
        "region": region,
        "mfu": mfu,
        "overhead_hours": overhead_hours,
    }
    requested = _instance_estimate(fit, shape, **common)
    recommended = None if best is None else _instance_estimate(best, shape, **common)

    catalog = get_catalog()
    notes: list[str] = [
        f"prices are approximate SageMaker AI on-demand prices as of {catalog.as_of}; "
        "refresh from https://aws.amazon.com/sagemaker/pricing/",
        f"spot assumes the catalog's discount ({catalog.spot_note})",
    ]
    if shape.approximate:
        notes.append(
            f"model shape of {shape.name!r} derived from {shape.parameters_billions:.2f}B "
            f"parameters ({shape.source}); memory and time are rougher than for catalogued models"
        )
    if requested.on_demand is not None and requested.on_demand.note:
        notes.append(requested.on_demand.note)
    notes.extend(fit.warnings)
    return RunEstimate(
        model=shape,
        method=fit.method,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=fit.memory.lora_r,
        gradient_checkpointing=fit.memory.gradient_checkpointing,
        instance_count=instance_count,
        multi_gpu=fit.multi_gpu,
        region=region,
        tokens=tokens,
        mfu=mfu,
        overhead_hours=overhead_hours,
        requested=requested,
        recommended=recommended,
        catalog_as_of=catalog.as_of,
        notes=tuple(notes),
    )
