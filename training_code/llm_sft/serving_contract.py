"""The serving contract: the merged model folder is written in the format the serving stack reads.

The training stack is transformers 5; the container the workflow deploys is the AWS Hugging Face
LLM (TGI) image ``huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6``, which is
``ghcr.io/huggingface/text-generation-inference:3.3.6`` plus a few packages
(awslabs/llm-hosting-container, ``huggingface/pytorch/tgi/docker/3.3.6/Dockerfile``). TGI builds
its Python environment with ``uv sync --frozen`` from ``server/uv.lock`` at tag v3.3.6:
transformers 4.51.0, tokenizers 0.21.0, huggingface-hub 0.30.1, safetensors 0.5.2 (torch 2.7.0).
What a transformers-5 ``save_pretrained`` folder looks like to that stack:

- ``config.json``: transformers 5 writes rope settings as ``rope_parameters``. TGI's Llama code
  reads ``config.rope_theta`` (``getattr(config, "rope_theta", 10000)``) and
  ``config.rope_scaling`` from a transformers-4.51 ``AutoConfig``, which knows neither key in
  ``rope_parameters``: a Llama 3 base (theta 500000, llama3 scaling) would serve with theta
  10000 and no scaling, silently. transformers 5 writes ``dtype``; 4.51 reads ``torch_dtype``.
- ``tokenizer_config.json``: ``"tokenizer_class": "TokenizersBackend"`` (a transformers-5 class:
  4.51 raises ``Tokenizer class TokenizersBackend does not exist``), and additional special
  tokens as a *list* under ``extra_special_tokens`` (4.51 expects a dict there and fails).
- The chat template is saved only as ``chat_template.jinja``; TGI's router reads it from
  ``tokenizer_config.json`` (or ``chat_template.json``), so the Messages API would have none.

**Decision: keep the pinned TGI container and write the merged model in the format both stacks
read** (``make_servable``), rather than switching the container or pinning training to 4.x:

- Every serving container lags the training stack, so the contract has to be explicit and tested
  whichever container is pinned; switching the image changes the pins, not the need.
- Writing the legacy keys *beside* the new ones loses nothing: ``rope_scaling`` carries the same
  values as ``rope_parameters`` (transformers 5 reads either), ``PreTrainedTokenizerFast`` runs
  ``tokenizer.json`` verbatim in both lines, ``chat_template.jinja`` stays. transformers 5 reads
  the rewritten folder exactly as it wrote it (tests/serving checks this with the training
  stack's 5.23; a transformers-5 serving image would get its own pins checked the same way).
- Pinning training to transformers 4.x would give up the training stack's fixes for a format
  question; switching to a vLLM image (the SageMaker Hugging Face vLLM DLC is on the
  transformers-5 line, ``huggingface-vllm:0.29.0-transformers5.15.0``) changes the request API,
  the container environment and the smoke test, and is the lead's call: TGI is in maintenance
  mode upstream since Dec 2025, and LoRA adapters on a shared base through SageMaker adapter
  inference components are documented for the LMI (DJL Serving / vLLM) containers. A new pin
  set in ``SERVING_STACK`` plus ``make test`` (tests/serving) is how such a switch is verified.

What the pinned container cannot be told by files alone goes into the manifest's
``serving_environment``: ``ENABLE_PREFILL_LOGPROBS=true`` (TGI 3 returns no prompt log-probs
otherwise, and the smoke test compares them) and ``DTYPE`` (TGI serves Llama-family models in
float16 unless told; a bfloat16 base should be served in bfloat16).

``tests/serving`` loads a trained folder with the serving pins in a separate environment
(``make setup-serving``) and compares tokenizer ids, chat rendering and logits with the training
stack; it fails when either side's versions move away from the ones recorded here.

Standard library only at import time: the Makefile reads the pins with
``python -m llm_sft.serving_contract requirements``.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Bumped when the folder format or the manifest changes meaning.
CONTRACT_VERSION = 1
MANIFEST_FILE = "serving_contract.json"
#: Written by llm_sft.serving_reference; read by the smoke-test Lambda next to the model.
REFERENCE_FILE = "serving_reference.json"


@dataclass(frozen=True)
class ServingStack:
    """A serving container and the Python packages that read the model folder in it."""

    name: str
    image: str  # repository:tag prefix, as the SageMaker image tables give it
    server_version: str  # stacks/components/huggingface_images.py SERVING_VERSION must match
    packages: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def requirements(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.packages.items()]


SERVING_STACK = ServingStack(
    name="tgi",
    image="huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6",
    server_version="3.3.6",
    packages={
        "transformers": "4.51.0",
        "tokenizers": "0.21.0",
        "huggingface-hub": "0.30.1",
        "safetensors": "0.5.2",
    },
    source="huggingface/text-generation-inference v3.3.6 server/uv.lock (uv sync --frozen)",
)

#: The training-stack versions this contract was verified with (tests/serving). A bump of
#: training_code/requirements.txt fails that test until the contract is re-verified here.
TRAINING_STACK_VERIFIED: Mapping[str, str] = {"transformers": "5.23.0", "tokenizers": "0.23.3"}

#: Container environment the served model needs (beside HF_MODEL_ID and the token limits).
SERVING_ENVIRONMENT: Mapping[str, str] = {"ENABLE_PREFILL_LOGPROBS": "true"}

#: The class every transformers 4.x and 5.x release reads as "run tokenizer.json verbatim".
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
#: Tokenizer classes that exist only in transformers 5 (the serving stack cannot import them).
TRANSFORMERS5_ONLY_TOKENIZER_CLASSES = frozenset(
    {"TokenizersBackend", "SentencePieceBackend", "PythonBackend", "MistralCommonBackend"}
)
#: rope_parameters keys that transformers 4.x keeps at the top level of the config.
_TOP_LEVEL_ROPE_KEYS = ("rope_theta", "partial_rotary_factor")
_SERVING_DTYPES = {"bfloat16": "bfloat16", "float16": "float16"}


# ---------------------------------------------------------------------------------------------
# Writing: the folder in the serving format
# ---------------------------------------------------------------------------------------------


def serving_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``config.json`` with the keys transformers 4.x reads added beside transformers 5's.

    Returns the new config and what was changed. Nested, per-layer-type rope parameters have no
    single 4.x equivalent: they are left as they are, with a warning (the smoke test decides).
    """
    out = dict(config)
    changes: list[str] = []
    rope = config.get("rope_parameters")
    if isinstance(rope, Mapping) and rope:
        if all(isinstance(value, Mapping) for value in rope.values()):
            changes.append(
                "WARNING: per-layer rope_parameters have no transformers-4 form; left unchanged"
            )
        else:
            for key in _TOP_LEVEL_ROPE_KEYS:
                if key in rope and out.get(key) != rope[key]:
                    out[key] = rope[key]
                    changes.append(f"config: {key}={rope[key]!r} from rope_parameters")
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            scaling = None
            if rope_type != "default":
                scaling = {k: v for k, v in rope.items() if k not in _TOP_LEVEL_ROPE_KEYS}
                scaling["rope_type"] = rope_type
            if out.get("rope_scaling") != scaling:
                out["rope_scaling"] = scaling
                changes.append(f"config: rope_scaling={scaling!r} from rope_parameters")
    if "dtype" in config and "torch_dtype" not in config:
        out["torch_dtype"] = config["dtype"]
        changes.append(f"config: torch_dtype={config['dtype']!r} from dtype")
    return out, changes


def serving_tokenizer_config(
    tokenizer_config: Mapping[str, Any],
    *,
    chat_template: str | None,
    has_tokenizer_json: bool,
) -> tuple[dict[str, Any], list[str]]:
    """``tokenizer_config.json`` that transformers 4.x and TGI's router read as training did."""
    out = dict(tokenizer_config)
    changes: list[str] = []
    cls = out.get("tokenizer_class")
    if has_tokenizer_json and cls != PORTABLE_TOKENIZER_CLASS:
        # The training tokenizer's state is tokenizer.json (saved from its backend); the
        # portable class loads exactly that, with no class-specific re-derivation on either side.
        out["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
        changes.append(f"tokenizer_config: tokenizer_class {cls!r} -> {PORTABLE_TOKENIZER_CLASS!r}")
    elif not has_tokenizer_json and cls in TRANSFORMERS5_ONLY_TOKENIZER_CLASSES:
        changes.append(
            f"WARNING: tokenizer class {cls!r} without tokenizer.json: the serving stack cannot"
            " load this tokenizer"
        )
    extra = out.get("extra_special_tokens")
    if isinstance(extra, list):
        # transformers 5 writes additional special tokens as a list here; 4.x reads a dict of
        # named extras under this key and the list under additional_special_tokens.
        merged = list(out.get("additional_special_tokens") or [])
        merged += [token for token in extra if token not in merged]
        out["additional_special_tokens"] = merged
        del out["extra_special_tokens"]
        changes.append("tokenizer_config: extra_special_tokens list -> additional_special_tokens")
    if chat_template is not None and out.get("chat_template") != chat_template:
        out["chat_template"] = chat_template
        changes.append("tokenizer_config: chat_template copied from chat_template.jinja")
    return out, changes


def make_servable(model_dir: Path) -> list[str]:
    """Rewrite ``config.json`` and ``tokenizer_config.json`` in place; returns the changes."""
    model_dir = Path(model_dir)
    changes: list[str] = []
    config_path = model_dir / "config.json"
    if config_path.is_file():
        config, config_changes = serving_config(_read_json(config_path))
        if config_changes:
            _write_json(config_path, config)
        changes += config_changes
    tokenizer_config_path = model_dir / "tokenizer_config.json"
    if tokenizer_config_path.is_file():
        template_path = model_dir / "chat_template.jinja"
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
        tokenizer_config, tokenizer_changes = serving_tokenizer_config(
            _read_json(tokenizer_config_path),
            chat_template=template,
            has_tokenizer_json=(model_dir / "tokenizer.json").is_file(),
        )
        if tokenizer_changes:
            _write_json(tokenizer_config_path, tokenizer_config)
        changes += tokenizer_changes
    for change in changes:
        (logger.warning if change.startswith("WARNING") else logger.info)("serving: %s", change)
    return changes


def serving_environment(model_dir: Path) -> dict[str, str]:
    """Container environment for this model: SERVING_ENVIRONMENT plus the dtype to serve in."""
    environment = dict(SERVING_ENVIRONMENT)
    path = Path(model_dir) / "config.json"
    config = _read_json(path) if path.is_file() else {}  # an adapter folder has none
    dtype = _SERVING_DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")))
    if dtype is not None:
        environment["DTYPE"] = dtype
    return environment


def training_stack_versions() -> dict[str, str]:
    """Installed versions of the packages that wrote the folder."""
    from importlib import metadata

    versions: dict[str, str] = {"python": sys.version.split()[0]}
    for package in ("transformers", "tokenizers", "torch", "peft", "safetensors", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(
    model_dir: Path,
    *,
    changes: Sequence[str],
    original: Mapping[str, Any],
    reference_written: bool,
) -> dict[str, Any]:
    """``serving_contract.json``: versions on both sides and what was converted."""
    manifest: dict[str, Any] = {
        "contract_version": CONTRACT_VERSION,
        "training_stack": training_stack_versions(),
        "training_stack_verified": dict(TRAINING_STACK_VERIFIED),
        "serving_stack": {
            **{k: v for k, v in asdict(SERVING_STACK).items() if k != "packages"},
            "packages": dict(SERVING_STACK.packages),
        },
        "serving_environment": serving_environment(model_dir),
        "conversions": list(changes),
        "original": dict(original),
        "reference": REFERENCE_FILE if reference_written else None,
    }
    _write_json(Path(model_dir) / MANIFEST_FILE, manifest)
    return manifest


def original_formats(model_dir: Path) -> dict[str, Any]:
    """What transformers 5 wrote, before make_servable (for the manifest)."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json") if (model_dir / "config.json").is_file() else {}
    tokenizer_config_path = model_dir / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
    return {
        "tokenizer_class": tokenizer_config.get("tokenizer_class"),
        "rope_parameters": copy.deepcopy(config.get("rope_parameters")),
    }


# ---------------------------------------------------------------------------------------------
# Reading: how the serving stack interprets a folder (the local inference server uses this)
# ---------------------------------------------------------------------------------------------


class NotServable(ValueError):  # noqa: N818 - reads as the condition it reports
    """The serving stack cannot load this folder."""


def served_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` as transformers 4.51 / TGI interpret it: ``rope_parameters`` unknown.

    Rope settings come from ``rope_theta`` (absent: the architecture default, 10000 for Llama)
    and ``rope_scaling`` (absent: none) only, as in the serving container.
    """
    return {k: v for k, v in config.items() if k != "rope_parameters"}


def served_tokenizer_files(model_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The tokenizer config the serving stack reads, and the chat template TGI's router uses.

    Raises NotServable where transformers 4.51 fails to load the tokenizer. The router reads
    ``chat_template`` from ``chat_template.json`` if present, else ``tokenizer_config.json``;
    it never reads ``chat_template.jinja``.
    """
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer_config.json"
    tokenizer_config = _read_json(path) if path.is_file() else {}
    cls = tokenizer_config.get("tokenizer_class")
    if cls in TRANSFORMERS5_ONLY_TOKENIZER_CLASSES:
        raise NotServable(f"Tokenizer class {cls} does not exist in the serving stack")
    if isinstance(tokenizer_config.get("extra_special_tokens"), list):
        raise NotServable("tokenizer_config.json: extra_special_tokens is a list, not a dict")
    template = tokenizer_config.get("chat_template")
    standalone = model_dir / "chat_template.json"
    if standalone.is_file():
        template = _read_json(standalone).get("chat_template", template)
    if isinstance(template, list):  # named templates: the router uses "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return tokenizer_config, template if isinstance(template, str) else None


def load_as_served(model_dir: Path, **model_kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) with the training stack, reading the folder as the serving stack does."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    _, template = served_tokenizer_files(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = template
    view = served_config(_read_json(model_dir / "config.json"))
    model_type = view.pop("model_type")
    config = AutoConfig.for_model(model_type, **view)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), config=config, **model_kwargs)
    return model, tokenizer


# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``requirements``: the serving stack's pins, one per line (the Makefile installs them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["requirements"]:
        print("\n".join(SERVING_STACK.requirements()))
        return 0
    print("usage: python -m llm_sft.serving_contract requirements", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
