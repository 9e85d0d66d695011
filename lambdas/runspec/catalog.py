"""Instance and base-model catalog, shipped as JSON data next to this module.

``data/instances.json`` lists the SageMaker AI instance types the platform knows about (GPU
families for training and serving, Neuron families for serving, and a few CPU types people ask
for by mistake) with accelerator specs and approximate on-demand prices per region.
``data/models.json`` lists the architecture of popular base models, keyed by lower-case Hugging
Face id. Both files say where their numbers come from (``as_of`` / ``source``); refresh the JSON,
not this code, when prices or models change.

Runs inside AWS Lambda (Python 3.13 + Powertools layer, which carries pydantic v2) and in the
CLI: the JSON files are validated by pydantic models of their shape; no I/O at import time. The
JSON is read once, on first use, and cached for the life of the process.

Units: memory in GiB (2**30 bytes), compute in dense bf16 TFLOPS (10**12 FLOP/s), prices in USD
per instance-hour, model sizes in billions (10**9) of parameters.

Over 400 lines as one idea: the catalog's typed models and their lookups, one source for
GPU memory, prices and model shapes.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "DATA_DIR",
    "Catalog",
    "InstanceSpec",
    "ModelShape",
    "ShapeSource",
    "UnknownInstanceType",
    "derive_shape",
    "get_catalog",
    "get_instance",
    "load_catalog",
    "parse_model_size",
    "resolve_model_shape",
    "training_instances",
]

#: Where the catalog JSON lives (shipped with the Lambda asset and the package).
DATA_DIR = Path(__file__).parent / "data"

AcceleratorType = Literal["nvidia", "neuron", "none"]
#: How a :class:`ModelShape` was obtained: ``catalog`` (the id or its last path segment is a
#: catalogued model), ``size-in-name`` (a size such as ``8b`` parsed from the id or S3 path, shape
#: derived by the scaling rule), ``parameters`` (derived from an explicit parameter count).
ShapeSource = Literal["catalog", "size-in-name", "parameters"]

# Scaling rule for models that are not catalogued (see derive_shape). The constants describe a
# Llama-3-style dense decoder, the most common fine-tuning base:
_DERIVED_HEAD_DIM = 128  # Llama 3, Mistral, Qwen2.5 >= 1.5B all use 128-wide heads
_DERIVED_ASPECT = 128  # hidden_size / num_layers: 4096/32 (Llama 3 8B), 3584/28 (Qwen2.5 7B)
_DERIVED_KV_HEADS = 8  # grouped-query attention with 8 KV heads (Llama 3, Mistral, Qwen2.5 >= 14B)
_DERIVED_MLP_RATIO = 3.5  # SwiGLU intermediate / hidden: 14336/4096 (Llama 3 8B, Mistral 7B)
_DERIVED_VOCAB = 128_256  # Llama 3 tokenizer; a large vocabulary keeps logits memory conservative
# Parameters per decoder layer ~= 13 * hidden**2: q and o projections 2h^2, k and v with 8 of 32
# heads 2 * h * h/4 = 0.5h^2, SwiGLU MLP 3 * h * 3.5h = 10.5h^2.
_DERIVED_LAYER_PARAMS_PER_H2 = 13.0
_DERIVED_TOP_K = 2  # routed experts per token for "NxM" mixtures-of-experts (Mixtral's top-2)


class UnknownInstanceType(ValueError):  # noqa: N818 - name fixed by the runspec interface
    """An instance type that is not in the catalog (a typo, or a type the platform does not know).

    A ``ValueError`` so that request validation reports it like any other bad value.
    """


@dataclass(frozen=True)
class InstanceSpec:
    """One SageMaker AI instance type.

    ``gpus`` counts accelerators of any kind (NVIDIA GPUs or Neuron chips); ``accelerator_type``
    tells which. ``gpu_memory_gib`` is the nominal memory per accelerator (data sheet),
    ``gpu_usable_memory_gib`` what the driver reports as allocatable (nvidia-smi total: ECC and
    driver reservations take ~6% on the GDDR6 cards). ``bf16_tflops_per_gpu`` is dense (no
    sparsity) bf16 tensor throughput per accelerator. ``usd_per_hour`` maps region to the
    approximate on-demand price of one instance; ``price_kind`` says which SageMaker price that is
    (``training``, ``inference`` or ``notebook``).
    """

    name: str
    family: str
    accelerator_type: AcceleratorType
    gpus: int
    gpu_model: str | None
    gpu_memory_gib: float
    gpu_usable_memory_gib: float
    bf16_tflops_per_gpu: float
    vcpus: int
    memory_gib: float
    #: NVMe instance storage (hardware-encrypted): SageMaker refuses a KMS key for the volume.
    instance_storage: bool
    training_supported: bool
    serving_supported: bool
    price_kind: str
    price_basis: str
    usd_per_hour: Mapping[str, float]

    @property
    def has_nvidia_gpu(self) -> bool:
        """True when the instance has CUDA GPUs, i.e. can run this platform's training code."""
        return self.accelerator_type == "nvidia" and self.gpus > 0

    @property
    def total_gpu_memory_gib(self) -> float:
        """Nominal accelerator memory of the whole instance, GiB."""
        return self.gpus * self.gpu_memory_gib

    def price(self, region: str, fallback_region: str = "us-east-1") -> tuple[float, str] | None:
        """On-demand USD per instance-hour and the region the price is for.

        Falls back to ``fallback_region`` when the catalog has no price for ``region`` (unknown
        region, or the type is not offered there); ``None`` when neither has a price.
        """
        if region in self.usd_per_hour:
            return self.usd_per_hour[region], region
        if fallback_region in self.usd_per_hour:
            return self.usd_per_hour[fallback_region], fallback_region
        return None


@dataclass(frozen=True)
class ModelShape:
    """Architecture of a decoder-only transformer, enough to size memory and compute.

    ``parameters_billions`` is the total parameter count (all experts for a mixture-of-experts);
    ``active_parameters_billions`` the parameters used per token (``None``: same as total).
    ``fused_qkv`` / ``fused_gate_up`` mark models whose attention or MLP projections are single
    ``nn.Linear`` modules (Phi-3), which changes the LoRA adapter count. ``source`` says whether
    the shape is catalogued or derived (then it is an approximation).
    """

    name: str
    parameters_billions: float
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 1
    experts_per_token: int = 1
    active_parameters_billions: float | None = None
    fused_qkv: bool = False
    fused_gate_up: bool = False
    source: ShapeSource = "catalog"

    def __post_init__(self) -> None:
        if not self.parameters_billions > 0:
            raise ValueError(f"model {self.name!r}: parameters_billions must be > 0")
        for attr in (
            "hidden_size",
            "num_layers",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "num_experts",
            "experts_per_token",
        ):
            if getattr(self, attr) < 1:
                raise ValueError(f"model {self.name!r}: {attr} must be >= 1")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"model {self.name!r}: experts_per_token > num_experts")

    @property
    def parameters(self) -> int:
        """Total parameter count."""
        return round(self.parameters_billions * 1e9)

    @property
    def active_parameters(self) -> int:
        """Parameters that take part in one token's forward pass (total for dense models)."""
        active = self.active_parameters_billions or self.parameters_billions
        return round(active * 1e9)

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model."""
        return self.num_experts > 1

    @property
    def approximate(self) -> bool:
        """True when the shape was derived by the scaling rule rather than catalogued."""
        return self.source != "catalog"

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x head_dim; not always hidden_size)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projection outputs."""
        return self.num_kv_heads * self.head_dim

    def linear_layers_per_layer(self) -> tuple[tuple[int, int], ...]:
        """(in_features, out_features) of every ``nn.Linear`` in one decoder layer.

        This is what PEFT's ``target_modules="all-linear"`` adapts (it excludes only the output
        head) and what bitsandbytes quantizes for QLoRA. Mixture-of-experts layers repeat the
        MLP per expert and add the router (hidden -> num_experts).
        """
        h, q, kv, inter = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        attention: list[tuple[int, int]]
        if self.fused_qkv:
            attention = [(h, q + 2 * kv), (q, h)]
        else:
            attention = [(h, q), (h, kv), (h, kv), (q, h)]
        mlp = (
            [(h, 2 * inter), (inter, h)] if self.fused_gate_up else [(h, inter)] * 2 + [(inter, h)]
        )
        router = [(h, self.num_experts)] if self.is_moe else []
        return tuple(attention + mlp * self.num_experts + router)

    @property
    def embedding_parameters(self) -> int:
        """Token embedding plus output head (counted once when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def computed_parameters(self) -> int:
        """Parameter count implied by the dimensions (linear layers, embeddings, norms).

        Used to check catalog entries; biases (Qwen's q/k/v) are ignored, they are < 0.1%.
        """
        linear = sum(i * o for i, o in self.linear_layers_per_layer()) * self.num_layers
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return linear + self.embedding_parameters + norms

    def size_label(self) -> str:
        """Human size, e.g. ``8.0B`` or ``46.7B MoE (12.9B active)``."""
        label = f"{self.parameters_billions:.1f}B"
        if self.is_moe:
            active = self.active_parameters / 1e9
            label += f" MoE ({active:.1f}B active)"
        return label


@dataclass(frozen=True)
class Catalog:
    """The loaded catalog: instances, base models and the provenance of both."""

    as_of: str
    source: str
    default_region: str
    regions: tuple[str, ...]
    instances: Mapping[str, InstanceSpec]
    spot_discount_default: float
    spot_discount_by_family: Mapping[str, float]
    spot_note: str
    models_as_of: str
    models_source: str
    models: Mapping[str, ModelShape]
    model_aliases: Mapping[str, str]

    def spot_discount(self, instance: InstanceSpec) -> float:
        """Assumed fractional saving of managed spot training against on-demand (0..1)."""
        return self.spot_discount_by_family.get(instance.family, self.spot_discount_default)

    def model(self, model_id: str) -> ModelShape | None:
        """The catalogued shape for a lower-case id or alias, else ``None``."""
        key = self.model_aliases.get(model_id, model_id)
        return self.models.get(key)


# ---------------------------------------------------------------------------------------------
# Loading


class _Strict(BaseModel):
    """The catalog files' shapes: strict types (``"one"`` is not a count, ``true`` not a
    number), unknown keys refused, every error naming the entry and the key."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


_Positive = Annotated[float, Field(gt=0, strict=False)]
_Fraction = Annotated[float, Field(ge=0, lt=1, strict=False)]


class _InstanceEntry(_Strict):
    family: str
    accelerator_type: AcceleratorType
    gpus: Annotated[int, Field(ge=0)]
    gpu_model: str | None
    gpu_memory_gib: Annotated[float, Field(ge=0, strict=False)]
    gpu_usable_memory_gib: Annotated[float, Field(ge=0, strict=False)]
    bf16_tflops_per_gpu: Annotated[float, Field(ge=0, strict=False)]
    vcpus: Annotated[int, Field(gt=0)]
    memory_gib: _Positive
    instance_storage: bool
    training_supported: bool
    serving_supported: bool
    price_kind: str
    price_basis: str
    usd_per_hour: dict[str, _Positive]


class _SpotDiscount(_Strict):
    note: str = ""
    default: _Fraction
    by_family: dict[str, _Fraction]


class _InstancesFile(_Strict):
    as_of: str
    source: str
    currency: Literal["USD"]
    default_region: str
    regions: list[str]
    spot_discount: _SpotDiscount
    instances: dict[str, _InstanceEntry]


class _ModelEntry(_Strict):
    parameters_billions: _Positive
    hidden_size: Annotated[int, Field(gt=0)]
    num_layers: Annotated[int, Field(gt=0)]
    num_attention_heads: Annotated[int, Field(gt=0)]
    num_kv_heads: Annotated[int, Field(gt=0)]
    head_dim: Annotated[int, Field(gt=0)]
    intermediate_size: Annotated[int, Field(gt=0)]
    vocab_size: Annotated[int, Field(gt=0)]
    tie_word_embeddings: bool = False
    num_experts: Annotated[int, Field(ge=1)] = 1
    experts_per_token: Annotated[int, Field(ge=1)] = 1
    active_parameters_billions: _Positive | None = None
    fused_qkv: bool = False
    fused_gate_up: bool = False
    aliases: list[str] = []


class _ModelsFile(_Strict):
    as_of: str
    source: str
    models: dict[str, _ModelEntry]


def _validated(kind: type[_Strict], path: Path) -> Any:
    try:
        return kind.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(repr(p) if '.' in str(p) else str(p) for p in e['loc'])}: {e['msg']}"
            for e in error.errors()
        )
        raise ValueError(f"catalog {path.name}: {problems}") from None


def load_catalog(data_dir: Path | None = None) -> Catalog:
    """Read and validate ``instances.json`` and ``models.json`` (uncached; see get_catalog)."""
    directory = DATA_DIR if data_dir is None else data_dir
    instances_doc: _InstancesFile = _validated(_InstancesFile, directory / "instances.json")
    models_doc: _ModelsFile = _validated(_ModelsFile, directory / "models.json")
    instances = {
        name: InstanceSpec(
            name=name,
            **{**entry.model_dump(), "usd_per_hour": MappingProxyType(dict(entry.usd_per_hour))},
        )
        for name, entry in instances_doc.instances.items()
    }
    models: dict[str, ModelShape] = {}
    aliases: dict[str, str] = {}
    for model_id, entry in models_doc.models.items():
        if model_id != model_id.lower():
            raise ValueError(f"catalog models.json: models.{model_id!r} must be lower case")
        models[model_id] = ModelShape(
            name=model_id, source="catalog", **entry.model_dump(exclude={"aliases"})
        )
        for alias in entry.aliases:
            if alias != alias.lower() or alias in aliases or alias in models:
                raise ValueError(f"catalog models.json: bad or duplicate alias {alias!r}")
            aliases[alias] = model_id
    spot = instances_doc.spot_discount
    return Catalog(
        as_of=instances_doc.as_of,
        source=instances_doc.source,
        default_region=instances_doc.default_region,
        regions=tuple(instances_doc.regions),
        instances=MappingProxyType(instances),
        spot_discount_default=spot.default,
        spot_discount_by_family=MappingProxyType(dict(spot.by_family)),
        spot_note=spot.note,
        models_as_of=models_doc.as_of,
        models_source=models_doc.source,
        models=MappingProxyType(models),
        model_aliases=MappingProxyType(aliases),
    )


@cache
def get_catalog() -> Catalog:
    """The shipped catalog, loaded on first use and cached for the process (Lambda container)."""
    return load_catalog()


def get_instance(name: str, *, field: str = "instance_type") -> InstanceSpec:
    """The catalog entry for ``name`` (e.g. ``ml.g5.2xlarge``).

    Raises :class:`UnknownInstanceType` naming ``field`` (e.g. ``training.instance_type``), with a
    close match when there is one and the list of known training-capable types.
    """
    catalog = get_catalog()
    spec = catalog.instances.get(name)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, list(catalog.instances), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(s.name for s in training_instances())
    raise UnknownInstanceType(
        f"{field}: {name!r} is not in the instance catalog (as of {catalog.as_of}){hint}; "
        f"training instance types known: {known}"
    )


def training_instances() -> tuple[InstanceSpec, ...]:
    """Instance types that can run this platform's (CUDA) training code, in catalog order."""
    return tuple(s for s in get_catalog().instances.values() if s.training_supported)


# ---------------------------------------------------------------------------------------------
# Model shapes


@dataclass(frozen=True)
class ParsedSize:
    """A model size found in an id or path: total billions, or experts x billions per expert."""

    billions: float
    experts: int = 1


# "8x7b", "8x22B": mixture of experts (experts x size of the dense model each expert comes from).
_MOE_SIZE = re.compile(r"(?<![a-z0-9.])(\d+)x(\d+(?:\.\d+)?)b(?![a-z0-9])")
# "8b", "70B", "0.5b", "1.5B", and millions "135m", "560m". The look-arounds keep "qwen2.5",
# "4bit", "a3b" (Qwen3 active size) and "v0.1" from matching.
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z0-9])")


def parse_model_size(text: str) -> ParsedSize | None:
    """Find a parameter-count token in a model id or S3 path.

    Path segments are searched from the last to the first (so ``s3://b/models/qwen2.5-0.5b/``
    uses the model directory, not the bucket), and within a segment the first ``NxMb`` token wins,
    then the first ``Nb``, then the first ``Nm`` (millions: ``1m`` after a size is usually a
    context length, so billions are preferred). Returns ``None`` when nothing matches.
    """
    segments = [s for s in text.lower().split("/") if s]
    for segment in reversed(segments):
        moe = _MOE_SIZE.search(segment)
        if moe:
            return ParsedSize(billions=float(moe.group(2)), experts=int(moe.group(1)))
        matches = list(_SIZE.finditer(segment))
        for unit in ("b", "m"):
            for match in matches:
                if match.group(2) == unit:
                    value = float(match.group(1))
                    billions = value if unit == "b" else value / 1000
                    if billions > 0:
                        return ParsedSize(billions=billions)
    return None


def _solve_hidden(parameters: float) -> float:
    """Hidden size h with 13 h^2 * (h / aspect) + 2 * vocab * h == parameters (bisection)."""

    def total(h: float) -> float:
        layers = h / _DERIVED_ASPECT
        return _DERIVED_LAYER_PARAMS_PER_H2 * h * h * layers + 2 * _DERIVED_VOCAB * h

    low, high = 1.0, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        if total(mid) < parameters:
            low = mid
        else:
            high = mid
    return low


def derive_shape(
    parameters_billions: float,
    *,
    name: str,
    experts: int = 1,
    source: ShapeSource = "parameters",
) -> ModelShape:
    """Approximate the shape of an uncatalogued dense (or ``experts`` x dense MoE) model.

    Scaling rule (Llama-3-style decoder, the usual fine-tuning base): head_dim 128, hidden/layers
    aspect ratio 128, 8 KV heads, SwiGLU intermediate 3.5 x hidden, untied embeddings with a
    128,256-token vocabulary. Parameters per layer are then ~13 h^2, so the hidden size h solves
    ``13 h^3 / 128 + 2 * 128256 * h = N``; h is rounded to a multiple of 128 (at least 256), and
    ``layers = h / 128``. This reproduces Llama 3 8B exactly (h 4096, 32 layers) and gives a
    70B model h 8704 x 68 layers (real: 8192 x 80), i.e. activations within ~10%.

    For ``experts`` > 1 (``8x7b``) the dense shape for ``parameters_billions`` is derived and its
    MLP replicated per expert with top-2 routing (Mixtral): total = dense + (E - 1) x MLP,
    active = dense + 1 x MLP.

    The returned ``parameters_billions`` is the requested count (MoE: the computed total), not
    what the rounded dimensions add up to, so weight memory scales exactly with it.
    """
    if not (parameters_billions > 0 and math.isfinite(parameters_billions)):
        raise ValueError(f"model {name!r}: parameter count must be a positive number")
    hidden_raw = _solve_hidden(parameters_billions * 1e9)
    hidden = max(256, round(hidden_raw / _DERIVED_HEAD_DIM) * _DERIVED_HEAD_DIM)
    heads = hidden // _DERIVED_HEAD_DIM
    layers = max(1, round(hidden / _DERIVED_ASPECT))
    intermediate = round(_DERIVED_MLP_RATIO * hidden / 256) * 256
    total_b = parameters_billions
    active_b: float | None = None
    top_k = 1
    if experts > 1:
        mlp_b = 3 * hidden * intermediate * layers / 1e9
        total_b = parameters_billions + (experts - 1) * mlp_b
        top_k = min(_DERIVED_TOP_K, experts)
        active_b = parameters_billions + (top_k - 1) * mlp_b
    return ModelShape(
        name=name,
        parameters_billions=total_b,
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=min(_DERIVED_KV_HEADS, heads),
        head_dim=_DERIVED_HEAD_DIM,
        intermediate_size=intermediate,
        vocab_size=_DERIVED_VOCAB,
        tie_word_embeddings=False,
        num_experts=experts,
        experts_per_token=top_k,
        active_parameters_billions=active_b,
        source=source,
    )


def _normalise_model_id(base_model: str) -> str:
    key = base_model.strip().lower().rstrip("/")
    for prefix in ("hf://", "https://huggingface.co/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def resolve_model_shape(base_model: str, parameters_billions: float | None = None) -> ModelShape:
    """The shape of ``base_model`` (a Hugging Face id or an ``s3://`` model directory).

    Resolution order:

    1. the id (lower-cased, trailing ``/`` dropped) is a catalogued model or alias;
    2. its last path segment is a catalogued model's name without the organisation
       (``s3://bucket/models/Meta-Llama-3-8B-Instruct/``);
    3. ``parameters_billions`` is given (the run spec's ``model_parameters_billions``): shape
       derived from it by :func:`derive_shape`. An explicit count beats a size guessed from the
       name;
    4. a size token in the id or path (``8b``, ``0.5b``, ``8x7b``; see parse_model_size):
       shape derived from it;
    5. otherwise ``ValueError`` asking for ``model_parameters_billions``.
    """
    catalog = get_catalog()
    key = _normalise_model_id(base_model)
    shape = catalog.model(key)
    if shape is not None:
        return shape
    basename = key.rsplit("/", 1)[-1]
    for candidate in (*catalog.models, *catalog.model_aliases):
        if candidate.rsplit("/", 1)[-1] == basename:
            found = catalog.model(candidate)
            if found is not None:
                return found
    if parameters_billions is not None:
        return derive_shape(parameters_billions, name=base_model, source="parameters")
    parsed = parse_model_size(key)
    if parsed is not None:
        return derive_shape(
            parsed.billions, name=base_model, experts=parsed.experts, source="size-in-name"
        )
    raise ValueError(
        f"model: cannot tell the size of {base_model!r}: it is not a catalogued model and its "
        "name has no size such as '8b' or '0.5b'; set model_parameters_billions "
        "(e.g. model_parameters_billions: 7.2)"
    )
