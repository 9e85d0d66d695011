"""Base model resolution, device planning and LoRA / QLoRA model construction."""

from __future__ import annotations

import importlib.util
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_sft.distributed import SINGLE, DistContext
from llm_sft.encoding import ensure_chat_template
from llm_sft.errors import ConfigurationError, ModelLoadError
from llm_sft.hyperparameters import Hyperparameters

logger = logging.getLogger(__name__)

# Attention implementations whose masks transformers builds from packed position_ids.
PACKING_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
# `attn_implementation=auto` on a CUDA GPU: the first of these that is installed (and, for
# flex_attention, measured on that GPU generation). flash-attn's varlen kernels and
# flex_attention's block masks compute only each packed sample's own causal block (sdpa computes
# the row's dense block-diagonal mask); flash-attn is not part of the pinned stack. Measured with
# `make bench-train-gpu` on an H200 (1.5B Llama-shaped, LoRA, bf16): flex_attention 32,314 vs
# sdpa 28,647 tokens/s at 2k-token rows (MFU 19.3 vs 17.1 %), 27,645 vs 19,798 at 8k (18.7 vs
# 13.4 %), after a 20-40 s compile. Only Hopper (compute capability 9.x) was measured; older GPUs
# (A10G, L4, A100) keep sdpa until measured (flex's default kernel tiles are tuned for large
# shared memory). On CPU `auto` keeps the library default.
GPU_ATTENTION_PREFERENCE = ("flash_attention_2", "flex_attention", "sdpa")
#: The compute capabilities (major) on which flex_attention was measured faster than sdpa.
FLEX_MEASURED_CAPABILITIES = (9,)
# Packages an implementation needs beyond torch and transformers.
_ATTENTION_PACKAGES = {
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
}


@dataclass(frozen=True)
class BaseModel:
    path: str  # what from_pretrained receives
    reference: str  # what to record as the base (the hub id when known)
    source: str  # "channel" | "local" | "hub"


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda" | "cpu"
    gpus: int  # visible to this process
    bf16: bool
    gradient_checkpointing: bool
    quantize_4bit: bool
    attention: str | None = None  # None: the library's default (sdpa)
    world_size: int = 1  # processes of the job (torchrun)
    local_rank: int = 0  # this process's GPU when launched by torchrun
    launched: bool = False

    def describe(self) -> str:
        text = (
            f"device={self.device} gpus={self.gpus} bf16={self.bf16}"
            f" gradient_checkpointing={self.gradient_checkpointing} 4bit={self.quantize_4bit}"
            f" attention={self.attention or 'default'}"
        )
        return text + (f" world_size={self.world_size}" if self.launched else "")


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or os.path.exists(model_id)


def _extract_archive(archive: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="base-model-"))
    logger.info("extracting %s to %s", archive, target)
    with tarfile.open(archive) as handle:
        handle.extractall(target, filter="data")
    return _model_folder(target, f"archive {archive.name}")


def _model_folder(directory: Path, what: str) -> Path:
    if (directory / "config.json").is_file():
        return directory
    archives = sorted(directory.glob("*.tar.gz"))
    if len(archives) == 1:
        return _extract_archive(archives[0])
    subfolders = [p for p in directory.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    if len(subfolders) == 1:
        return subfolders[0]
    raise ModelLoadError(
        f"{what} ({directory}) holds no model: expected config.json (a save_pretrained folder)"
        " or a single model.tar.gz"
    )


def resolve_base_model(model_id: str, model_channel: Path | None) -> BaseModel:
    """The `model` channel wins over `model_id`; local paths are checked before any import."""
    if model_channel is not None and model_channel.is_dir():
        folder = _model_folder(model_channel, "the 'model' channel")
        return BaseModel(path=str(folder), reference=model_id or str(folder), source="channel")
    if not model_id:
        raise ModelLoadError(
            "no base model: set hyperparameter 'model_id' or provide a 'model' channel"
        )
    if _looks_like_path(model_id):
        folder = Path(model_id).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model_id {model_id!r} is a path, but no such folder exists")
        return BaseModel(
            path=str(_model_folder(folder, f"model_id {model_id!r}")),
            reference=model_id,
            source="local",
        )
    return BaseModel(path=model_id, reference=model_id, source="hub")


def resolve_attention(hp: Hyperparameters, cuda: bool) -> str | None:
    """The attention implementation to load the model with (None: the library default)."""
    requested = hp.attn_implementation
    if requested == "auto":
        if not cuda:
            return None
        for name in GPU_ATTENTION_PREFERENCE:
            if name == "flex_attention" and _gpu_capability_major() not in (
                FLEX_MEASURED_CAPABILITIES
            ):
                continue
            package = _ATTENTION_PACKAGES.get(name)
            if package is None or importlib.util.find_spec(package) is not None:
                return name
        return "sdpa"
    package = _ATTENTION_PACKAGES.get(requested)
    if package is not None and (not cuda or importlib.util.find_spec(package) is None):
        raise ConfigurationError(
            f"attn_implementation={requested} needs a CUDA GPU and the {package} package, which"
            " this image does not have; use attn_implementation=sdpa or flex_attention (both ship"
            " with PyTorch), or auto"
        )
    return requested


def _gpu_capability_major() -> int:
    import torch

    return int(torch.cuda.get_device_capability()[0])


def plan_device(hp: Hyperparameters, ctx: DistContext = SINGLE) -> DevicePlan:
    import torch

    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    if hp.method == "qlora":
        if not cuda:
            raise ConfigurationError(
                "method=qlora needs a CUDA GPU (4-bit bitsandbytes kernels); none is available"
                " here. Use method=lora, or run on a GPU instance."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigurationError(
                "method=qlora needs the bitsandbytes package, which is not installed in this"
                " image. Use the project's training image, or method=lora."
            )
    bf16_supported = cuda and torch.cuda.is_bf16_supported()
    if hp.bf16 == "auto":
        bf16 = bf16_supported
    elif hp.bf16 and cuda and not bf16_supported:
        raise ConfigurationError("bf16=True, but this GPU does not support bfloat16; use bf16=auto")
    else:
        bf16 = bool(hp.bf16)
    if bf16 and not cuda:
        logger.warning("bf16=True on CPU: usually much slower than float32 without AVX512-BF16")
    checkpointing = cuda if hp.gradient_checkpointing == "auto" else bool(hp.gradient_checkpointing)
    if cuda and ctx.launched and ctx.local_rank >= gpus:
        raise ConfigurationError(
            f"torchrun started {ctx.local_world_size} processes on this instance, but only"
            f" {gpus} GPU(s) are visible: one process per GPU"
        )
    return DevicePlan(
        device="cuda" if cuda else "cpu",
        gpus=gpus,
        bf16=bf16,
        gradient_checkpointing=checkpointing,
        quantize_4bit=hp.method == "qlora",
        attention=resolve_attention(hp, cuda),
        world_size=ctx.world_size,
        local_rank=ctx.local_rank,
        launched=ctx.launched,
    )


def load_tokenizer(base: BaseModel, hp: Hyperparameters) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path, trust_remote_code=hp.trust_remote_code)
    except Exception as error:
        raise ModelLoadError(f"cannot load the tokenizer of {base.reference!r}: {error}") from None
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"the tokenizer of {base.reference!r} defines no EOS token")
    if tokenizer.pad_token_id is None:
        # Padding never reaches the loss (labels -100); generation needs some pad id.
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def compute_dtype(plan: DevicePlan) -> Any:
    import torch

    return torch.bfloat16 if plan.bf16 and plan.device == "cuda" else torch.float32


def _device_map(plan: DevicePlan, on_cpu: bool = False) -> Any:
    if plan.device != "cuda" or on_cpu:
        return None
    if plan.launched:  # one process per GPU (torchrun): the whole model on this process's GPU
        return {"": plan.local_rank}
    # Several GPUs in one process: spread layers (naive model parallelism) to fit larger models.
    return {"": 0} if plan.gpus <= 1 else "auto"


def model_parameters(base: BaseModel, hp: Hyperparameters) -> int:
    """Parameters of the base model, counted on the meta device (no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base.path, trust_remote_code=hp.trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=hp.trust_remote_code
            )
    except Exception as error:
        raise ModelLoadError(
            f"cannot read the configuration of {base.reference!r}: {error}"
        ) from None
    return sum(p.numel() for p in skeleton.parameters())


def load_model_skeleton(base: BaseModel, hp: Hyperparameters, plan: DevicePlan) -> Any:
    """The model's modules with parameters on the meta device (no memory, no weights read).

    FSDP ranks other than 0 start from this; rank 0's weights reach them after sharding.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": hp.trust_remote_code}
    if plan.attention is not None:
        kwargs["attn_implementation"] = plan.attention
    try:
        config = AutoConfig.from_pretrained(base.path, trust_remote_code=hp.trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype(plan), **kwargs)
    except Exception as error:
        raise ModelLoadError(f"cannot load model {base.reference!r}: {error}") from None
    model.config.use_cache = False
    return model


def load_base_model(
    base: BaseModel, hp: Hyperparameters, plan: DevicePlan, *, on_cpu: bool = False
) -> Any:
    """The base model in the compute dtype: on this process's GPU, or on CPU when `on_cpu`
    (FSDP's rank 0, which shards it onto the GPUs)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "trust_remote_code": hp.trust_remote_code,
        "dtype": compute_dtype(plan),
        "device_map": _device_map(plan, on_cpu),
    }
    if plan.attention is not None:
        kwargs["attn_implementation"] = plan.attention
    if plan.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(plan),
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except Exception as error:
        raise ModelLoadError(f"cannot load model {base.reference!r}: {error}") from None
    model.config.use_cache = False
    return model


def supports_packing(model: Any) -> bool:
    """Built-in transformers models with a standard attention build masks from position_ids."""
    builtin = type(model).__module__.startswith("transformers.")
    attention = getattr(model.config, "_attn_implementation", None)
    return builtin and attention in PACKING_ATTENTION


def add_lora(model: Any, hp: Hyperparameters, plan: DevicePlan) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpoint_kwargs = {"use_reentrant": False}
    if plan.quantize_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=plan.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpoint_kwargs,
        )
    elif plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
    targets = hp.lora_target_modules
    config = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as error:  # e.g. target modules not found in the model
        raise ConfigurationError(f"cannot apply LoRA: {error}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%.3f%%)",
        hp.lora_r,
        hp.lora_alpha,
        targets,
        f"{trainable:,}",
        f"{total:,}",
        100.0 * trainable / max(total, 1),
    )
    return peft_model


def input_device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device
