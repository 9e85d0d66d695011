"""The evaluation after training: the saved model scored on the run's test set.

It runs in the training job, on the training instance, right after the model is saved, and
loads the model from the folder the job just wrote (the merged model that will be registered
and served, not the training-time adapter). Why here rather than in a job of its own:

- cost: the instance, the image and the base model's weights are already there; a separate job
  would pay another start-up (minutes of image pull and model download, billed) for a test set
  that generates in minutes;
- isolation: the same role, VPC and KMS settings already hold the data and the model; a second
  job would need the same grants and gain nothing; the evaluation reads only the model folder
  and the test channel, so it cannot alter what training produced;
- reuse: one code path for every option (custom image, script mode, local backend), the job's
  MetricDefinitions capture the scores, and the job's MLflow run gets them. What a separate job
  would add (re-scoring an old model on a new test set) is a launch of its own, not a reason
  to pay twice on every run.

Metrics: ``eval_loss``/``perplexity`` (the mean loss of the reference answers' tokens, as the
training's validation loss is measured) and the generated ones (llm_sft.scoring), answers
generated in batches (greedy by default, so scores are reproducible), optionally graded by an
Amazon Bedrock judge (llm_sft.judge). Without a test set the run is scored by its validation
loss. Either way the job writes ``evaluation_summary.json`` beside the model (the metrics and
what they were measured on: the data's sha256, the tokenizer's, the generation settings; the
record function decides the gate from it and compares only runs scored on the same basis),
the per-example results to ``evaluation_examples.jsonl`` in the output data folder, a final
``METRIC evaluation ...`` line, and all of it to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_sft.data import ChannelData, Example, load_channel
from llm_sft.metrics import format_evaluation_line
from llm_sft.scoring import GENERATED_METRICS, ExampleScores, aggregate, score_example

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATION_ENV",
    "EXAMPLES_FILE",
    "SUMMARY_FILE",
    "EvaluationData",
    "EvaluationSettings",
    "evaluate_job",
    "find_test_channel",
    "load_test_set",
    "tokenizer_identity",
]

#: The run's evaluation settings (runspec.request.Evaluation.job_config), compact JSON.
EVALUATION_ENV = "FT_EVALUATION"
TEST_CHANNEL_ENV = "SM_CHANNEL_TEST"
SUMMARY_FILE = "evaluation_summary.json"
EXAMPLES_FILE = "evaluation_examples.jsonl"
TOKEN_METRICS = ("eval_loss", "perplexity")
JUDGE_METRIC = "judge_score"
SUMMARY_VERSION = 1
#: Versions recorded with the scores: they can move a score.
LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "accelerate", "rouge-score", "nltk")


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    batch_size: int = 8

    def describe(self) -> str:
        """As runspec.request.Generation.describe: the settings that change scores."""
        if not self.do_sample:
            return f"greedy max_new_tokens={self.max_new_tokens}"
        return (
            f"sample max_new_tokens={self.max_new_tokens} temperature={self.temperature or 1.0:g}"
            f" top_p={self.top_p or 1.0:g}"
        )


@dataclass(frozen=True)
class JudgeSettings:
    model_id: str
    rubric: str
    max_examples: int = 200


@dataclass(frozen=True)
class EvaluationSettings:
    """What to score and how; without ``FT_EVALUATION`` the request's defaults."""

    metrics: tuple[str, ...] = (*TOKEN_METRICS, *GENERATED_METRICS)
    generation: Generation = field(default_factory=Generation)
    judge: JudgeSettings | None = None

    @classmethod
    def from_env(cls, environ: Any = None) -> EvaluationSettings:
        raw = (environ if environ is not None else os.environ).get(EVALUATION_ENV, "").strip()
        if not raw:
            return cls()
        config = json.loads(raw)
        judge = config.get("judge")
        return cls(
            metrics=tuple(config.get("metrics") or cls.metrics),
            generation=Generation(**(config.get("generation") or {})),
            judge=JudgeSettings(**judge) if judge else None,
        )

    @property
    def generated(self) -> list[str]:
        return [m for m in self.metrics if m in GENERATED_METRICS]


@dataclass(frozen=True)
class EvaluationData:
    channel: ChannelData
    identity: dict[str, Any]

    @property
    def examples(self) -> tuple[Example, ...]:
        return self.channel.examples


def find_test_channel(train: Path, environ: Any = None) -> Path | None:
    """The ``test`` channel: ``SM_CHANNEL_TEST``, else beside the training channel."""
    configured = (environ if environ is not None else os.environ).get(TEST_CHANNEL_ENV)
    if configured:
        return Path(configured)
    sibling = Path(train).parent / "test"
    return sibling if Path(train).name == "train" and sibling.is_dir() else None


def load_test_set(path: Path | None, pinned: dict[str, Any] | None = None) -> EvaluationData | None:
    """The test set, validated like the training data (a bad row fails the job before it
    trains); its identity: content sha256 (of the files' sha256s, so the file names do not
    matter), rows, and the launch's pin (uri, version id, ETag)."""
    if path is None:
        return None
    channel = load_channel("test", path)
    content = hashlib.sha256()
    for relative in sorted(channel.file_sha256):
        content.update(f"{channel.file_sha256[relative]}\n".encode())
    identity: dict[str, Any] = {
        "sha256": content.hexdigest(),
        "rows": channel.rows,
        "files": dict(sorted(channel.file_sha256.items())),
        "source": "channel",
        "path": str(path),
    }
    identity.update({k: v for k, v in (pinned or {}).items() if k in ("uri", "version_id")})
    return EvaluationData(channel=channel, identity=identity)


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """Which tokenizer scored: a digest of its vocabulary, special tokens and chat template
    (what changes token ids, hence losses, and prompts, hence answers)."""
    vocab = sorted(tokenizer.get_vocab().items())
    content = {
        "vocab": vocab,
        "special": sorted(str(t) for t in tokenizer.all_special_tokens),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()
    return {
        "sha256": digest,
        "class": type(tokenizer).__name__,
        "vocab_size": len(vocab),
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
    }


def validation_basis(identity: dict[str, Any]) -> dict[str, Any]:
    """The validation data's identity with a content digest comparable across runs: of the
    files' sha256s (names do not matter), or, for a share split off the training data, of the
    training data and the split (another seed or share is another validation set)."""
    data = {k: v for k, v in identity.items() if k != "path"}
    files = identity.get("files")
    if isinstance(files, dict) and files:
        content = hashlib.sha256()
        for relative in sorted(files):
            content.update(f"{files[relative]}\n".encode())
        data["sha256"] = content.hexdigest()
    elif str(identity.get("source", "")).startswith("split"):
        text = f"{identity.get('sha256')}|{identity['source']}"
        data["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return data


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# -- the model ----------------------------------------------------------------------------


def load_saved_model(model_dir: Path, saved: str, base_path: str, plan: Any) -> Any:
    """The model as the job saved it: the merged model, or the base with the saved adapter."""
    from transformers import AutoModelForCausalLM

    from llm_sft.modeling import compute_dtype

    kwargs: dict[str, Any] = {"dtype": compute_dtype(plan)}
    if plan.device == "cuda":
        kwargs["device_map"] = "auto"
    model: Any
    if saved == "merged":
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
        model = PeftModel.from_pretrained(base, str(model_dir))
    model.eval()
    model.config.use_cache = True
    return model


def _device(model: Any) -> Any:
    from llm_sft.modeling import input_device

    return input_device(model)


def reference_of(example: Example) -> str:
    if example.is_chat:
        return example.messages[-1].content
    return example.completion or ""


def prompt_ids(tokenizer: Any, example: Example) -> tuple[str, list[int]]:
    """The prompt as the model saw such rows in training: the conversation before its last
    assistant turn with the generation prompt, or the prompt (BOS, no EOS)."""
    if example.is_chat:
        conversation = [{"role": m.role, "content": m.content} for m in example.messages[:-1]]
        text = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert example.prompt is not None
    ids = list(tokenizer(example.prompt, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return example.prompt, ids


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    generation: Generation,
    max_prompt_tokens: int,
) -> list[str]:
    """Answers to ``prompts`` (token ids), generated in batches with left padding."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = _device(model)
    answers: list[str] = []
    options: dict[str, Any] = {
        "max_new_tokens": generation.max_new_tokens,
        "do_sample": generation.do_sample,
        "pad_token_id": pad,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if generation.do_sample:
        options.update(
            {
                k: v
                for k, v in (("temperature", generation.temperature), ("top_p", generation.top_p))
                if v is not None
            }
        )
    for start in range(0, len(prompts), generation.batch_size):
        batch = [
            list(p[-max_prompt_tokens:]) or [pad]
            for p in prompts[start : start + generation.batch_size]
        ]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            output = model.generate(input_ids=input_ids, attention_mask=mask, **options)
        for row in output[:, width:].tolist():
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


def reference_loss(
    model: Any, tokenizer: Any, examples: Sequence[Example], max_seq_length: int, batch_size: int
) -> tuple[float | None, int]:
    """Mean loss per reference-answer token (the tokens training learns), and their number."""
    import torch

    from llm_sft.encoding import IGNORE_INDEX, encode_example

    device = _device(model)
    encoded = [encode_example(tokenizer, e, max_seq_length) for e in examples]
    encoded = [e for e in encoded if e.trainable_tokens > 0]
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in batch])
        mask = torch.tensor(
            [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
        )
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        shifted = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
        targets = labels[:, 1:].reshape(-1).to(shifted.device)
        loss = torch.nn.functional.cross_entropy(
            shifted, targets, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += float(loss)
        count += int((targets != IGNORE_INDEX).sum())
    return (total / count if count else None), count


# -- the job's evaluation -----------------------------------------------------------------


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def evaluate_job(
    *,
    test_set: EvaluationData | None,
    settings: EvaluationSettings,
    tokenizer: Any,
    model_dir: Path,
    output_data_dir: Path,
    saved: str,
    base_path: str,
    plan: Any,
    max_seq_length: int,
    validation: dict[str, Any],
    validation_loss: float | None,
    tracker: Any,
    datasets: dict[str, Any] | None = None,
    step: int,
    judge_client: Any = None,
) -> dict[str, Any]:
    """Score the saved model, write the summary and the per-example results, report them;
    returns the summary. ``validation``: the validation data's identity (the basis when there
    is no test set), ``validation_loss`` the training's."""
    started = time.time()
    tokens = tokenizer_identity(tokenizer)
    metrics: dict[str, float] = {}
    rows: list[ExampleScores] = []
    judge_error: str | None = None
    if test_set is None:
        scored_on, data, generation = "validation", validation_basis(validation), None
        if validation_loss is not None:
            metrics = {
                "eval_loss": validation_loss,
                "perplexity": _perplexity(validation_loss) or 0,
            }
    else:
        scored_on, data = "test", test_set.identity
        generation = (
            settings.generation.describe() if settings.generated or settings.judge else None
        )
        model = load_saved_model(model_dir, saved, base_path, plan)
        batch = settings.generation.batch_size
        if set(TOKEN_METRICS) & set(settings.metrics):
            loss, _ = reference_loss(model, tokenizer, test_set.examples, max_seq_length, batch)
            if loss is not None:
                metrics["eval_loss"] = loss
                metrics["perplexity"] = _perplexity(loss) or 0
        if settings.generated or settings.judge is not None:
            prompts = [prompt_ids(tokenizer, e) for e in test_set.examples]
            room = max(1, max_seq_length - settings.generation.max_new_tokens)
            answers = generate_answers(
                model, tokenizer, [ids for _, ids in prompts], settings.generation, room
            )
            for example, (prompt, _), answer in zip(
                test_set.examples, prompts, answers, strict=True
            ):
                reference = reference_of(example)
                scores: dict[str, float | None] = dict(
                    score_example(answer, reference, settings.generated)
                )
                rows.append(ExampleScores(example.source, prompt, reference, answer, scores))
            metrics.update(aggregate([r.scores for r in rows], settings.generated))
            if settings.judge is not None:
                judge_error = _judge(rows, settings.judge, judge_client)
                judged = aggregate([r.scores for r in rows], [JUDGE_METRIC])
                metrics.update(judged)
        del model
    metrics = {k: v for k, v in metrics.items() if k in settings.metrics or test_set is None}
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "scored_on": scored_on,
        "data": data,
        "tokenizer": tokens,
        "generation": generation,
        "metrics": metrics,
        "validation_loss": validation_loss,
        "examples": len(rows) if test_set is not None else None,
        "libraries": library_versions(),
        "judge": (
            {
                "model_id": settings.judge.model_id,
                "rubric": settings.judge.rubric,
                "error": judge_error,
            }
            if settings.judge is not None and test_set is not None
            else None
        ),
        "mlflow_run_id": getattr(getattr(tracker, "run", None), "info", None)
        and tracker.run.info.run_id,
        "seconds": round(time.time() - started, 3),
    }
    _write(model_dir / SUMMARY_FILE, summary)
    _write(output_data_dir / SUMMARY_FILE, summary)
    if rows:
        output_data_dir.mkdir(parents=True, exist_ok=True)
        with (output_data_dir / EXAMPLES_FILE).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row.row(), ensure_ascii=False) + "\n")
    print(format_evaluation_line(**metrics), flush=True)
    _track(tracker, summary, rows, step, test_set, datasets or {})
    logger.info(
        "evaluation on the %s set: %s",
        scored_on,
        ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) or "no metric",
    )
    return summary


def _judge(rows: list[ExampleScores], judge: JudgeSettings, client: Any) -> str | None:
    from llm_sft.judge import JudgeError, judge_answers

    try:
        grades = judge_answers(
            client,
            judge.model_id,
            judge.rubric,
            [(r.prompt, r.reference, r.prediction) for r in rows[: judge.max_examples]],
        )
    except JudgeError as error:
        logger.error("judge_score not computed: %s", error)
        return str(error)
    for row, grade in zip(rows, grades, strict=False):
        row.scores[JUDGE_METRIC] = grade
    return None


def _track(
    tracker: Any,
    summary: dict[str, Any],
    rows: list[ExampleScores],
    step: int,
    test_set: EvaluationData | None,
    datasets: dict[str, Any],
) -> None:
    tracker.log_metrics({f"evaluation.{k}": v for k, v in summary["metrics"].items()}, step=step)
    tags: dict[str, object] = {
        "scored.dataset": summary["scored_on"],
        "scored.data_sha256": summary["data"].get("sha256", ""),
        "scored.tokenizer": summary["tokenizer"]["sha256"],
        "scored.generation": summary["generation"] or "",
        **{f"library.{k}": v for k, v in summary["libraries"].items()},
    }
    tracker.set_tags(tags)
    if test_set is not None:
        # Every channel again: the identity artifact is rewritten with the test set in it.
        tracker.log_datasets({**datasets, "test": test_set.identity})
    if rows:
        columns = list(rows[0].row())
        tracker.log_table(
            columns, [[r.row().get(c) for c in columns] for r in rows], "evaluation_examples.json"
        )
    tracker.log_dict(summary, SUMMARY_FILE)


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
