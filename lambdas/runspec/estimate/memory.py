"""GPU memory: one training step per GPU under each strategy, and a merged model being served.

Units: bytes internally, GiB (2**30 bytes) in every result.

Training, per GPU (peak during a step)
--------------------------------------
``N`` total parameters, ``E`` embedding + output head parameters (once when tied), ``L``
decoder layers of ``P = (N - E) / L`` parameters, ``T`` trainable LoRA parameters
(``target_modules="all-linear"``: ``T = L * sum(r * (in + out))`` over every ``nn.Linear`` of a
layer), ``W`` processes (one per GPU), ``d`` bytes per value (2 with bf16, 4 without).

==========  ================================  ====================  ===================
strategy    weights held                      gathered              LoRA state
==========  ================================  ====================  ===================
``single``  ``d N`` (QLoRA: NF4 layers +      -                     ``16 T``
            ``d E`` + one dequantized linear)
``ddp``     as ``single``                     -                     ``16 T + 4 T``
``fsdp``    ``d N / W``                       ``d (E + 2 P)``       ``16 T / W + 4 T / L``
==========  ================================  ====================  ===================

* LoRA state: fp32 adapter weights 4, gradients 4, AdamW m and v 8 bytes per trainable parameter
  (PEFT keeps the adapters of a bf16 model in fp32). DDP adds its gradient buckets, a second
  copy of the gradients (4 T).
* QLoRA stores every decoder ``nn.Linear`` as 4-bit NF4 with double-quantized constants: 4.127
  bits per parameter (Dettmers et al. 2023, section 2); embeddings and head stay in ``d``; one
  linear layer at a time is dequantized for its matmul. QLoRA runs ``single`` or ``ddp`` only.
* FSDP (PyTorch's ``fully_shard`` on every decoder layer and on the root, as the training code
  shards): each GPU keeps ``1/W`` of every weight; a layer's weights are all-gathered for its
  forward and backward and freed after, with the next layer's gather in flight (two layers
  gathered at once); the root's (embeddings, norm, head) stay gathered from its forward to its
  backward (``fully_shard`` does not reshard the root after forward). Gradients of one layer are
  held unsharded until their reduce-scatter.

Activations (per GPU: every process runs its own micro-batch ``b`` of sequence ``s``; hidden
``h``, SwiGLU intermediate ``I``, ``a`` heads, ``k`` routed experts per token):

* one decoder layer without recomputation keeps ``s*b*(17h + 8*I*k)`` bytes in bf16: the
  per-layer estimate of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", eq. 2: ``s*b*h*(34 + 5*a*s/h)``) adapted to a Llama-style layer (attention
  11h and the two norms 4h as in the paper, the MLP input 2h, four tensors of width I for SwiGLU,
  no dropout masks). The ``5*a*s`` attention-score term only with ``eager`` attention (sdpa and
  flash attention keep no scores). Without bf16 every tensor takes twice the bytes.
* with gradient checkpointing (one checkpoint per decoder layer) a layer keeps only its input,
  ``d*s*b*h`` bytes, and one layer is recomputed at a time in the backward pass.
* logits: ``s*b*vocab*(d + 8)`` bytes at the loss (the logits, their fp32 upcast and the fp32
  log-softmax saved for backward), which dominates for 128k-256k vocabularies.

Peak activations = checkpoints + max(logits, one recomputed layer) with checkpointing, every
layer's activations + logits without. Overhead: 1 GiB (CUDA context, cuBLAS and NCCL
workspaces) plus 10% of everything but the resident frozen weights for allocator fragmentation.
The comparison is against the memory the driver reports (``gpu_usable_memory_gib``). Expect
~15% of a measured peak; it errs high on logits for a fused or chunked loss.

The whole model at either end (GPU memory and host RAM of one instance)
-----------------------------------------------------------------------
FSDP: rank 0 reads the bf16 weights into host RAM before sharding them (``2 N`` + 4 GiB of
headroom for the OS, Python and the data). QLoRA and FSDP: the adapter is merged at the end into
a fresh bf16 copy of the base spread over the instance's GPUs and host RAM (``2 N`` + 4 GiB).
DDP and single LoRA merge in place.

Serving
-------
The serving container (TGI) keeps the merged model's bf16 weights sharded over all GPUs of the
endpoint's instance; per GPU it keeps 1.5 GiB for itself and gives 90% of the rest to the KV
cache, ``2 * layers * kv_dim * 2`` bytes per token (keys and values, bf16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runspec.catalog import InstanceSpec, ModelShape
from runspec.estimate._data import rounded
from runspec.estimate.strategy import Strategy
from runspec.setup import Method, TrainingSetup

__all__ = [
    "GIB",
    "MemoryEstimate",
    "estimate_memory",
    "kv_cache_gib_per_token",
    "load_memory_needed_gib",
    "lora_trainable_parameters",
    "merge_memory_needed_gib",
    "serving_kv_cache_gib",
    "serving_weights_gib",
    "training_memory",
    "whole_instance_memory_gib",
]

GIB = 1024**3

_FP32 = 4
_BF16 = 2
# LoRA adapters of a bf16 model are fp32 (PEFT upcasts them): weights, gradients, AdamW m + v.
_LORA_WEIGHT_BYTES = 4
_LORA_GRAD_BYTES = 4
_LORA_OPTIMIZER_BYTES = 8
# NF4 with double quantization: 4 bits + 0.127 bits of block constants per parameter.
_NF4_BYTES_PER_PARAM = (4 + 0.127) / 8
_ATTN_NORM_PER_H = 11 + 4 + 2  # bf16 bytes per token: attention 11h, two norms 4h, MLP input 2h
_SWIGLU_PER_I = 4 * _BF16  # gate, up, SiLU(gate), product
_EAGER_SCORE_BYTES = 5  # Korthikanti: scores 2 + softmax 2 + dropout mask 1, per (a * s) element
_LOSS_FP32_BYTES = 4 + 4  # fp32 upcast of the logits + fp32 log-softmax, per logit
_FSDP_GATHERED_LAYERS = 2  # the current layer and the prefetched one
_FIXED_OVERHEAD_GIB = 1.0
_FRAGMENTATION = 0.10
_HOST_HEADROOM_GIB = 4.0
#: Serving: CUDA context, NCCL and the container's own buffers per GPU (TGI reserves ~1 GiB;
#: measured overheads of 1-2 GiB are typical).
_SERVING_OVERHEAD_GIB_PER_GPU = 1.5
#: TGI gives this share of the free memory to the KV cache (its --cuda-memory-fraction default is
#: 1.0, less what warm-up measures for activations; 0.9 leaves that margin).
_SERVING_KV_SHARE = 0.9

_METHOD_LABEL = {"lora": "LoRA", "qlora": "QLoRA"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training step on one GPU, GiB; ``total_gib`` is the sum of the parts
    (``gathered_gib``: weights all-gathered by FSDP; 0 otherwise)."""

    method: str
    strategy: Strategy
    world_size: int
    sequence_length: int
    micro_batch_size: int
    lora_r: int
    gradient_checkpointing: bool
    trainable_parameters: int
    weights_gib: float
    gathered_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float
    total_gib: float

    def breakdown(self) -> str:
        """``weights 15.0, gradients 0.2, optimizer 0.3, activations 5.9, overhead 1.7``."""
        gathered = f", gathered {self.gathered_gib:.1f}" if self.strategy == "fsdp" else ""
        return (
            f"weights {self.weights_gib:.1f}{gathered}, gradients {self.gradients_gib:.1f}, "
            f"optimizer {self.optimizer_gib:.1f}, activations {self.activations_gib:.1f}, "
            f"overhead {self.overhead_gib:.1f}"
        )

    def describe(self) -> str:
        """One line: the total per GPU, the breakdown and what it was computed for."""
        label = f"{_METHOD_LABEL[self.method]} r={self.lora_r}"
        parts = [
            f"{label}, {self.trainable_parameters / 1e6:,.1f}M trainable",
            f"seq {self.sequence_length} x micro-batch {self.micro_batch_size}",
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}",
        ]
        if self.strategy != "single":
            parts.append(f"{self.strategy} over {self.world_size} GPUs")
        return f"~{self.total_gib:.1f} GiB per GPU ({self.breakdown()}; {'; '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = rounded(self)
        return result


def lora_trainable_parameters(shape: ModelShape, lora_r: int) -> int:
    """LoRA parameters for ``target_modules="all-linear"``: r x (in + out) per adapted linear."""
    per_layer = sum(lora_r * (i + o) for i, o in shape.linear_layers_per_layer())
    return per_layer * shape.num_layers


def _layer_activation_bytes(shape: ModelShape, tokens: int, seq: int, eager: bool) -> float:
    per_token = (
        _ATTN_NORM_PER_H * shape.hidden_size
        + _SWIGLU_PER_I * shape.intermediate_size * shape.experts_per_token
    )
    if eager:
        per_token += _EAGER_SCORE_BYTES * shape.num_attention_heads * seq
    return float(per_token * tokens)


def training_memory(
    shape: ModelShape,
    *,
    method: Method,
    strategy: Strategy,
    world_size: int,
    sequence_length: int,
    micro_batch_size: int,
    lora_r: int,
    gradient_checkpointing: bool,
    bf16: bool = True,
    eager_attention: bool = False,
) -> MemoryEstimate:
    """Peak memory of one GPU for one training step (model: the module docstring).

    ``strategy`` and ``world_size`` as the job runs them (``single``: one process); QLoRA does
    not run under ``fsdp`` (ValueError).
    """
    if method == "qlora" and strategy == "fsdp":
        raise ValueError("QLoRA does not run under fsdp: its 4-bit weights are not sharded")
    d = _BF16 if bf16 else _FP32
    n = float(shape.parameters)
    embedding = float(min(shape.embedding_parameters, shape.parameters))
    layer_params = (n - embedding) / shape.num_layers
    trainable = lora_trainable_parameters(shape, lora_r)
    shards = world_size if strategy == "fsdp" else 1
    gathered = 0.0
    if strategy == "fsdp":
        frozen = d * n / shards
        gathered = d * (embedding + _FSDP_GATHERED_LAYERS * layer_params)
        # one layer's LoRA gradients, before their reduce-scatter
        unsharded_gradients = _LORA_GRAD_BYTES * trainable / shape.num_layers
    elif method == "qlora":
        frozen = _NF4_BYTES_PER_PARAM * (n - embedding) + d * embedding
        # one linear layer dequantized for its matmul
        frozen += d * max(i * o for i, o in shape.linear_layers_per_layer())
        unsharded_gradients = _LORA_GRAD_BYTES * trainable if strategy == "ddp" else 0.0
    else:
        frozen = d * n
        # DDP's gradient buckets: a second copy of the gradients
        unsharded_gradients = _LORA_GRAD_BYTES * trainable if strategy == "ddp" else 0.0
    weights = frozen + _LORA_WEIGHT_BYTES * trainable / shards
    gradients = _LORA_GRAD_BYTES * trainable / shards + unsharded_gradients
    optimizer = _LORA_OPTIMIZER_BYTES * trainable / shards

    tokens = sequence_length * micro_batch_size
    scale = d / _BF16
    layer = scale * _layer_activation_bytes(shape, tokens, sequence_length, eager_attention)
    logits = float((d + _LOSS_FP32_BYTES) * tokens * shape.vocab_size)
    if gradient_checkpointing:
        checkpoints = float(d * shape.hidden_size * tokens * shape.num_layers)
        activations = checkpoints + max(logits, layer)
    else:
        activations = layer * shape.num_layers + logits

    parts = weights + gathered + gradients + optimizer + activations
    overhead = _FIXED_OVERHEAD_GIB * GIB + _FRAGMENTATION * (parts - frozen)
    return MemoryEstimate(
        method=method,
        strategy=strategy,
        world_size=world_size,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_r=lora_r,
        gradient_checkpointing=gradient_checkpointing,
        trainable_parameters=trainable,
        weights_gib=weights / GIB,
        gathered_gib=gathered / GIB,
        gradients_gib=gradients / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB,
        overhead_gib=overhead / GIB,
        total_gib=(parts + overhead) / GIB,
    )


def estimate_memory(setup: TrainingSetup, strategy: Strategy) -> MemoryEstimate:
    """Per-GPU memory of ``setup``'s job under ``strategy``."""
    return training_memory(
        setup.model,
        method=setup.method,
        strategy=strategy,
        world_size=setup.world_size,
        sequence_length=setup.max_seq_length,
        micro_batch_size=setup.per_device_train_batch_size,
        lora_r=setup.lora_r,
        gradient_checkpointing=setup.gradient_checkpointing,
        bf16=setup.bf16,
        eager_attention=setup.attn_implementation == "eager",
    )


def _whole_bf16_model_gib(shape: ModelShape) -> float:
    return _BF16 * shape.parameters / GIB + _HOST_HEADROOM_GIB


def merge_memory_needed_gib(shape: ModelShape, method: str, strategy: Strategy) -> float:
    """GPU memory and host RAM of one instance the final merge needs, GiB (0: merged in place)."""
    if method == "qlora" or strategy == "fsdp":
        return _whole_bf16_model_gib(shape)
    return 0.0


def load_memory_needed_gib(shape: ModelShape, strategy: Strategy) -> float:
    """Host RAM rank 0 needs to read the weights before sharding them (FSDP), GiB."""
    return _whole_bf16_model_gib(shape) if strategy == "fsdp" else 0.0


def whole_instance_memory_gib(spec: InstanceSpec) -> float:
    """GPU memory (usable) and host RAM of one instance, GiB."""
    gpu = spec.gpus * spec.gpu_usable_memory_gib if spec.has_nvidia_gpu else 0.0
    return spec.memory_gib + gpu


def serving_weights_gib(shape: ModelShape) -> float:
    """The merged model's bf16 weights, GiB."""
    return shape.parameters * _BF16 / GIB


def kv_cache_gib_per_token(shape: ModelShape) -> float:
    """Keys and values of one token over every layer, bf16, GiB."""
    return 2 * shape.num_layers * shape.kv_dim * _BF16 / GIB


def serving_kv_cache_gib(spec: InstanceSpec, shape: ModelShape) -> float:
    """GPU memory the serving container gives the KV cache on ``spec``, GiB (0: none left)."""
    gpus = max(spec.gpus, 1)
    free = spec.gpu_usable_memory_gib * gpus - _SERVING_OVERHEAD_GIB_PER_GPU * gpus
    return max(0.0, (free - serving_weights_gib(shape)) * _SERVING_KV_SHARE)


def describe_run(method: str, shape: ModelShape) -> str:
    """``LoRA on an 8.0B model``: the article as the number is spoken."""
    size = shape.size_label()
    spoken_vowel = size.startswith("8") or (size[:2] in ("11", "18") and not size[2:3].isdigit())
    return f"{_METHOD_LABEL[method]} on {'an' if spoken_vowel else 'a'} {size} model"
