"""The run request: what a user asks the fine-tuning workflow to do (schema version 1).

One schema, three callers: the launch Lambda validates every execution's input with it, the CLI
validates run files before anything is started, and the tests generate requests from it. Every
field has a documented default, so ``{}`` is a valid request. Unknown fields are errors, never
dropped; every error names the field (``training.instance_type``) and the rule it broke.

Over 400 lines as one idea: the request's schema (its models, their cross-field rules and
the error wording) is one contract, also exported as docs/run-request.schema.json.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runspec.defaults import hyperparameter_bounds, hyperparameter_choices

__all__ = [
    "EVALUATION_METRICS",
    "GENERATED_METRICS",
    "HIGHER_IS_BETTER",
    "JUDGE_METRIC",
    "SCHEMA_VERSION",
    "TOKEN_METRICS",
    "ApprovalRequest",
    "Dataset",
    "DeployRequest",
    "Deployment",
    "Evaluation",
    "Gate",
    "GateRule",
    "Generation",
    "Hyperparameters",
    "Judge",
    "JumpStartModel",
    "RetryRequest",
    "RunRequest",
    "RunRequestError",
    "Training",
    "UndeployRequest",
    "is_approval_request",
    "is_deploy_request",
    "is_retry_request",
    "is_undeploy_request",
    "metric_direction",
    "parse_approval_request",
    "parse_deploy_request",
    "parse_gate_rule",
    "parse_retry_request",
    "parse_run_request",
    "parse_undeploy_request",
]

SCHEMA_VERSION: Literal[1] = 1

#: SageMaker resource names: alphanumerics and hyphens, no leading/trailing hyphen.
_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.*)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"

#: ``jumpstart:<model id>`` or ``jumpstart:<model id>@<version>``: a SageMaker JumpStart model.
JUMPSTART_ID = re.compile(
    r"^jumpstart:(?P<model_id>[a-z0-9][a-z0-9\-]{0,127})(@(?P<version>\d+\.\d+\.\d+))?$"
)


class RunRequestError(ValueError):
    """A run request is invalid. ``problems`` holds one ``field: rule`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _instance(value: str | None) -> str | None:
    if value is not None and not re.match(r"^ml\.[a-z0-9]+\.[a-z0-9]+$", value):
        raise ValueError(f"{value!r} is not a SageMaker instance type like ml.g5.2xlarge")
    return value


class _Section(BaseModel):
    # strict: a value of the wrong type is an error, never converted ('no' is not false, 8.0 is
    # not the integer 8, true is not 1); a JSON integer is still a valid float.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, strict=True)


class Dataset(_Section):
    """Training data in the platform's datasets bucket: a JSONL object or a prefix ending in '/'."""

    train: str
    validation: str | None = None

    @field_validator("train", "validation")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None:
            match = S3_URI.match(value)
            if not match or not match.group("key"):
                raise ValueError(f"{value!r} is not an s3://bucket/key URI")
        return value


#: SageMaker's ceiling for a training job's runtime and, for spot, its wait (28 days). The
#: state machine's timeout is derived from it: an accepted run must never time out.
MAX_TRAINING_HOURS = 672.0


class Training(_Section):
    """Where and how the training job runs."""

    #: ``custom-image``: the platform's own image (everything baked in, works without internet).
    #: ``script-mode``: the AWS Hugging Face training container with training_code/ as the script
    #: (installs training_code/requirements.txt at start: needs internet egress).
    option: Literal["custom-image", "script-mode"] = "custom-image"
    #: None: the platform's configured default.
    instance_type: str | None = None
    instance_count: Annotated[int, Field(ge=1, le=16)] = 1
    #: Managed spot training: typically 60-70 % cheaper, restarts resume from checkpoints.
    spot: bool = True
    #: SageMaker's ceiling is 28 days.
    max_runtime_hours: Annotated[float, Field(gt=0, le=MAX_TRAINING_HOURS)] = 24.0
    #: Spot only: how long to wait for capacity plus run; default twice max_runtime_hours.
    max_wait_hours: Annotated[float, Field(gt=0, le=MAX_TRAINING_HOURS)] | None = None
    volume_size_gb: Annotated[int, Field(ge=30, le=16384)] = 200

    _instance_type = field_validator("instance_type")(classmethod(lambda cls, v: _instance(v)))

    @model_validator(mode="after")
    def _spot_wait(self) -> Training:
        if self.max_wait_hours is not None:
            if not self.spot:
                raise ValueError("max_wait_hours applies to spot training only (spot: true)")
            if self.max_wait_hours <= self.max_runtime_hours:
                raise ValueError(
                    f"max_wait_hours ({self.max_wait_hours:g}) must be greater than "
                    f"max_runtime_hours ({self.max_runtime_hours:g})"
                )
        return self

    @property
    def max_wait_seconds(self) -> int | None:
        if not self.spot:
            return None
        hours = self.max_wait_hours or min(2 * self.max_runtime_hours, MAX_TRAINING_HOURS)
        return int(hours * 3600)

    @property
    def max_runtime_seconds(self) -> int:
        return int(self.max_runtime_hours * 3600)


Tristate = bool | Literal["auto"]


def _bounded(name: str) -> Any:
    """The training contract's range of ``name`` (runspec.defaults: generated from the training
    code's BOUNDS), as pydantic constraints; ``also`` values are allowed outside the range."""
    bound = hyperparameter_bounds(name)
    constraints: dict[str, Any] = {}
    if "minimum" in bound:
        constraints["gt" if bound.get("exclusive_minimum") else "ge"] = bound["minimum"]
    if "maximum" in bound:
        constraints["lt" if bound.get("exclusive_maximum") else "le"] = bound["maximum"]
    if not bound.get("also"):
        return Field(**constraints)
    allowed = tuple(bound["also"])

    def check(value: float | None) -> float | None:
        if value is None or value in allowed:
            return value
        low, high = constraints.get("ge", constraints.get("gt")), constraints.get("le")
        if (low is not None and value < low) or (high is not None and value > high):
            extra = f" (or {', '.join(_number(v) for v in allowed)})"
            raise ValueError(f"must be between {_number(low)} and {_number(high)}{extra}")
        return value

    return AfterValidator(check)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _choices(name: str) -> Any:
    options = hyperparameter_choices(name)

    def check(value: str | None) -> str | None:
        if value is not None and value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return AfterValidator(check)


class Hyperparameters(_Section):
    """Training hyperparameters; names, meanings, bounds and choices are the training code's
    (training_code/README.md; bounds through the generated contract, runspec.defaults). Unset
    ones take the training code's defaults."""

    method: Annotated[str, _choices("method")] | None = None
    epochs: Annotated[float, _bounded("epochs")] | None = None
    max_steps: Annotated[int, _bounded("max_steps")] | None = None
    learning_rate: Annotated[float, _bounded("learning_rate")] | None = None
    per_device_train_batch_size: Annotated[int, _bounded("per_device_train_batch_size")] | None = (
        None
    )
    per_device_eval_batch_size: Annotated[int, _bounded("per_device_eval_batch_size")] | None = None
    gradient_accumulation_steps: Annotated[int, _bounded("gradient_accumulation_steps")] | None = (
        None
    )
    max_seq_length: Annotated[int, _bounded("max_seq_length")] | None = None
    lora_r: Annotated[int, _bounded("lora_r")] | None = None
    lora_alpha: Annotated[int, _bounded("lora_alpha")] | None = None
    lora_dropout: Annotated[float, _bounded("lora_dropout")] | None = None
    lora_target_modules: Literal["all-linear"] | list[str] | None = None
    packing: bool | None = None
    bf16: Tristate | None = None
    gradient_checkpointing: Tristate | None = None
    warmup_ratio: Annotated[float, _bounded("warmup_ratio")] | None = None
    lr_scheduler_type: Annotated[str, _choices("lr_scheduler_type")] | None = None
    weight_decay: Annotated[float, _bounded("weight_decay")] | None = None
    max_grad_norm: Annotated[float, _bounded("max_grad_norm")] | None = None
    validation_split: Annotated[float, _bounded("validation_split")] | None = None
    logging_steps: Annotated[int, _bounded("logging_steps")] | None = None
    eval_steps: Annotated[int, _bounded("eval_steps")] | None = None
    save_steps: Annotated[int, _bounded("save_steps")] | None = None
    save_total_limit: Annotated[int, _bounded("save_total_limit")] | None = None
    seed: Annotated[int, _bounded("seed")] | None = None
    merge_adapter: bool | None = None
    trust_remote_code: bool | None = None
    #: Multi-GPU strategy (auto: from the memory model) and the attention kernel.
    distributed_strategy: Annotated[str, _choices("distributed_strategy")] | None = None
    attn_implementation: Annotated[str, _choices("attn_implementation")] | None = None

    @field_validator("lora_target_modules")
    @classmethod
    def _modules(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("must name at least one module, or be 'all-linear'")
            for name in value:
                if not re.match(r"^[A-Za-z_][\w.]*$", name):
                    raise ValueError(f"{name!r} is not a module name")
        return value

    def as_sagemaker_strings(self) -> dict[str, str]:
        """The set hyperparameters as CreateTrainingJob takes them: every value a string,
        booleans as ``True``/``False`` and lists as Python reprs (what the sagemaker-training
        toolkit passes to the script)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            out[name] = repr([str(v) for v in value]) if isinstance(value, list) else str(value)
        return out


#: What evaluation can score. Token metrics come from the model's loss on the reference answers
#: of the held-out set; generated metrics compare what the model generates with the references
#: (llm_sft.scoring), judge_score asks an Amazon Bedrock model to grade each answer.
TOKEN_METRICS: tuple[str, ...] = ("eval_loss", "perplexity")
GENERATED_METRICS: tuple[str, ...] = ("exact_match", "token_f1", "rougeL", "json_valid")
JUDGE_METRIC = "judge_score"
EVALUATION_METRICS: tuple[str, ...] = (*TOKEN_METRICS, *GENERATED_METRICS, JUDGE_METRIC)
#: Metrics where a larger value is better; the rest (losses) are better lower.
HIGHER_IS_BETTER = frozenset((*GENERATED_METRICS, JUDGE_METRIC))
MetricName = Literal[
    "eval_loss", "perplexity", "exact_match", "token_f1", "rougeL", "json_valid", "judge_score"
]
#: A gate rule: ``<metric> <op> <number>``, e.g. ``exact_match >= 0.6``.
_RULE = re.compile(
    r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|<|>)\s*(?P<value>-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)$"
)
#: FT_EVALUATION, the job's evaluation settings, is a training job environment value: at most
#: 512 characters.
EVALUATION_CONFIG_LIMIT = 512


def metric_direction(metric: str) -> Literal[">=", "<="]:
    """How a metric is better: ``>=`` (higher is better) or ``<=`` (lower is better)."""
    return ">=" if metric in HIGHER_IS_BETTER else "<="


class GateRule(BaseModel):
    """One parsed gate rule: ``metric op value``."""

    model_config = ConfigDict(frozen=True)

    metric: str
    op: Literal["<=", ">=", "<", ">"]
    value: float

    def holds(self, measured: float) -> bool:
        return {
            "<=": measured <= self.value,
            ">=": measured >= self.value,
            "<": measured < self.value,
            ">": measured > self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_number(self.value)}"


def parse_gate_rule(text: str) -> GateRule:
    match = _RULE.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a rule like 'exact_match >= 0.6' (metric, one of <= >= < >, number)"
        )
    metric = match.group("metric")
    if metric not in EVALUATION_METRICS:
        raise ValueError(f"{text!r}: {metric!r} is not one of {', '.join(EVALUATION_METRICS)}")
    op = cast(Literal["<=", ">=", "<", ">"], match.group("op"))
    better = metric_direction(metric)
    if op[0] != better[0]:
        raise ValueError(
            f"{text!r}: {metric} is better {'higher' if better == '>=' else 'lower'}; a gate "
            f"rule keeps the models on the better side ({metric} {better} ...)"
        )
    return GateRule(metric=metric, op=op, value=float(match.group("value")))


class Gate(_Section):
    """What a trained model must reach to be registered: one rule per metric, each in the
    metric's direction (``exact_match >= 0.6``, ``eval_loss <= 1.2``), and the metrics on which
    it must beat the best Approved model of the group scored on the same test set."""

    rules: Annotated[list[str], Field(max_length=len(EVALUATION_METRICS))] = Field(
        default_factory=list
    )
    must_beat_best_approved: Annotated[
        list[MetricName], Field(max_length=len(EVALUATION_METRICS))
    ] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for text in value:
            rule = parse_gate_rule(text)
            if rule.metric in seen:
                raise ValueError(f"{rule.metric} has more than one rule; give one per metric")
            seen.add(rule.metric)
        return value

    @field_validator("must_beat_best_approved")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a metric twice")
        return value

    def parsed_rules(self) -> list[GateRule]:
        return [parse_gate_rule(text) for text in self.rules]


class Generation(_Section):
    """How the evaluation generates answers. Greedy by default, so that scores are
    reproducible."""

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    #: False: greedy decoding. True: sampling with temperature/top_p (scores then vary).
    do_sample: bool = False
    temperature: Annotated[float, Field(gt=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    #: Prompts generated at once on the training instance.
    batch_size: Annotated[int, Field(ge=1, le=256)] = 8

    @model_validator(mode="after")
    def _sampling(self) -> Generation:
        if not self.do_sample and (self.temperature is not None or self.top_p is not None):
            raise ValueError("temperature and top_p apply to sampling only (do_sample: true)")
        return self

    def describe(self) -> str:
        """The settings that change scores, as one comparable string."""
        if not self.do_sample:
            return f"greedy max_new_tokens={self.max_new_tokens}"
        return (
            f"sample max_new_tokens={self.max_new_tokens} temperature={self.temperature or 1.0:g}"
            f" top_p={self.top_p or 1.0:g}"
        )


DEFAULT_JUDGE_RUBRIC = (
    "Grade the answer against the reference: 1 when it is correct and complete, 0 when it is "
    "wrong, in between for partially correct answers."
)


class Judge(_Section):
    """An LLM-as-judge score from an Amazon Bedrock model (off unless given). The model must be
    enabled in the account and allowed by the platform (its training role may invoke it)."""

    #: A Bedrock foundation model id among the platform's judge_model_ids (its configuration),
    #: e.g. 'anthropic.claude-3-haiku-20240307-v1:0'; inference profiles are not supported.
    model_id: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9.:_\-/]*$")
    ]
    rubric: Annotated[str, Field(min_length=1, max_length=240)] = DEFAULT_JUDGE_RUBRIC
    #: Examples judged at most (Bedrock is billed per call).
    max_examples: Annotated[int, Field(ge=1, le=5000)] = 200


class Evaluation(_Section):
    """How the trained model is scored and the gate it must pass to be registered.

    With ``dataset`` (a JSONL test set in the datasets bucket, chat or prompt/completion rows
    whose last assistant turn or completion is the reference answer), every metric is measured
    on that test set after training, with the merged model; without it, on the validation set
    (loss and perplexity only). Runs are compared only when scored on the same data (sha256)
    with a compatible tokenizer and the same generation settings.

    ``metric`` / ``threshold`` / ``must_beat_best_approved`` are the shorthand of schema version
    1 for a one-metric gate: ``{metric: eval_loss, threshold: 1.2}`` is
    ``gate: {rules: ['eval_loss <= 1.2']}``.
    """

    #: JSONL object or prefix ending in '/' in the datasets bucket; None: no test set.
    dataset: str | None = None
    #: None: eval_loss and perplexity, plus exact_match, token_f1, rougeL and json_valid when a
    #: test set is given (and judge_score with a judge).
    metrics: Annotated[list[MetricName], Field(min_length=1)] | None = None
    generation: Generation = Field(default_factory=Generation)
    judge: Judge | None = None
    gate: Gate | None = None
    # The shorthand (schema version 1).
    metric: MetricName = "eval_loss"
    #: Register only if metric is at most (a loss) or at least (a score) the threshold.
    threshold: Annotated[float, Field(gt=0)] | None = None
    #: Register only if strictly better than the best Approved model in the group.
    must_beat_best_approved: bool = False

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        if value is not None:
            match = S3_URI.match(value)
            if not match or not match.group("key"):
                raise ValueError(f"{value!r} is not an s3://bucket/key URI")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names a metric twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Evaluation:
        # Non-default values only: a resolved run document carries every field, defaults too.
        shorthand = {
            name
            for name, default in (
                ("metric", "eval_loss"),
                ("threshold", None),
                ("must_beat_best_approved", False),
            )
            if getattr(self, name) != default
        }
        if self.gate is not None and shorthand:
            raise ValueError(
                "give the gate as evaluation.gate or as the shorthand "
                f"{', '.join(sorted(shorthand))}, not both"
            )
        scored = self.scored_metrics()
        if self.dataset is None:
            needs_data = [m for m in scored if m not in TOKEN_METRICS]
            if needs_data:
                raise ValueError(
                    f"{', '.join(needs_data)} compare generated answers with reference answers: "
                    "give a test set in evaluation.dataset"
                )
        if JUDGE_METRIC in (self.metrics or ()) and self.judge is None:
            raise ValueError("judge_score needs evaluation.judge (a Bedrock model)")
        gated = [r.metric for r in self.gate_rules()] + self.must_beat_metrics()
        missing = [m for m in dict.fromkeys(gated) if m not in scored]
        if missing:
            hint = (
                "give a test set in evaluation.dataset"
                if self.dataset is None and self.metrics is None
                else "add them to evaluation.metrics"
            )
            raise ValueError(f"the gate uses {', '.join(missing)}, which are not scored: {hint}")
        size = len(self.job_config())
        if size > EVALUATION_CONFIG_LIMIT:
            raise ValueError(
                f"the evaluation settings take {size} characters in the training job's "
                f"environment (FT_EVALUATION, at most {EVALUATION_CONFIG_LIMIT}); shorten "
                "evaluation.judge.rubric"
            )
        return self

    def scored_metrics(self) -> list[str]:
        """The metrics the evaluation reports, in EVALUATION_METRICS order."""
        chosen: set[str]
        if self.metrics is not None:
            chosen = set(self.metrics)
        else:
            chosen = set(TOKEN_METRICS) | (set(GENERATED_METRICS) if self.dataset else set())
        if self.judge is not None:
            chosen.add(JUDGE_METRIC)
        return [m for m in EVALUATION_METRICS if m in chosen]

    def gate_rules(self) -> list[GateRule]:
        """The gate's absolute rules (the shorthand as one rule in the metric's direction)."""
        if self.gate is not None:
            return self.gate.parsed_rules()
        if self.threshold is None:
            return []
        return [
            GateRule(metric=self.metric, op=metric_direction(self.metric), value=self.threshold)
        ]

    def must_beat_metrics(self) -> list[str]:
        """The metrics on which the model must beat the best comparable Approved model."""
        if self.gate is not None:
            return list(self.gate.must_beat_best_approved)
        return [self.metric] if self.must_beat_best_approved else []

    def primary_metric(self) -> str:
        """The metric runs are ranked by: the gate's first metric, else the shorthand's."""
        gated = [r.metric for r in self.gate_rules()] + self.must_beat_metrics()
        return gated[0] if gated else self.metric

    def job_config(self) -> str:
        """FT_EVALUATION: what the training job needs to evaluate (compact JSON)."""
        config: dict[str, Any] = {
            "metrics": self.scored_metrics(),
            "generation": self.generation.model_dump(exclude_none=True),
        }
        if self.judge is not None:
            config["judge"] = self.judge.model_dump()
        return json.dumps(config, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class Deployment(_Section):
    """Deploy the registered model to a real-time endpoint (only when its package is Approved)."""

    enabled: bool = False
    #: None: the platform's configured default.
    instance_type: str | None = None
    initial_instance_count: Annotated[int, Field(ge=1, le=10)] = 1
    #: The endpoint is named ``<prefix>-<endpoint_name>`` (default ``<prefix>-<experiment_name>``);
    #: reusing a name updates that endpoint in place.
    endpoint_name: Annotated[str, Field(max_length=40, pattern=_NAME)] | None = None

    _instance_type = field_validator("instance_type")(classmethod(lambda cls, v: _instance(v)))


class JumpStartModel(_Section):
    """A JumpStart base model as it was resolved before launch (``finetune launch``, the Studio
    notebook: the SageMaker SDK's JumpStart metadata for the region), so that the run names
    exactly what it trained on. Written by the tools, not by hand (runspec.request.JUMPSTART_ID
    names the model; launch_run.base_models checks the pin)."""

    model_id: Annotated[str, Field(min_length=1, max_length=128)]
    #: The model version the metadata resolved (JumpStart versions are semantic versions).
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]
    #: The model's weights: an S3 folder in the region's JumpStart bucket (the private one for
    #: models behind a license).
    artifact_uri: str
    #: The license the model is offered under (an s3:// object), when it has one: then the
    #: request must say accept_eula: true.
    eula_uri: str | None = None

    @field_validator("artifact_uri")
    @classmethod
    def _folder(cls, value: str) -> str:
        match = S3_URI.match(value)
        if not match or not match.group("key") or not value.endswith("/"):
            raise ValueError(f"{value!r} is not an s3://bucket/prefix/ folder")
        return value


class RunRequest(_Section):
    """A fine-tuning run. ``{}`` means: fine-tune the default base model on the default dataset
    (``s3://<datasets bucket>/datasets/default/``) with LoRA on the default instance, gate on
    eval loss, register, do not deploy."""

    schema_version: Literal[1] = SCHEMA_VERSION
    #: Optional; the run id is derived from it (or from the request's content when absent).
    run_name: Annotated[str, Field(max_length=40, pattern=_NAME)] | None = None
    experiment_name: Annotated[str, Field(min_length=1, max_length=24, pattern=_NAME)] = "default"
    #: A Hugging Face Hub id (needs internet egress), an s3:// folder in the datasets bucket
    #: holding a saved model (config.json, weights, tokenizer; ``finetune stage-model`` copies a
    #: Hub snapshot there), or ``jumpstart:<model id>[@<version>]`` (a SageMaker JumpStart model:
    #: no token, no egress; resolved into ``jumpstart`` before launch).
    base_model: str = DEFAULT_BASE_MODEL
    #: The JumpStart resolution of ``base_model`` (written by finetune launch / the notebook).
    jumpstart: JumpStartModel | None = None
    #: I have read and accept the base model's end-user license agreement: required for
    #: JumpStart models that have one (the training job passes it to SageMaker as
    #: ModelAccessConfig.AcceptEula).
    accept_eula: bool = False
    #: Size hint for the memory estimate when the model id does not say (e.g. '8b').
    model_parameters_billions: Annotated[float, Field(gt=0, le=2000)] | None = None
    #: None: the platform's default dataset location.
    dataset: Dataset | None = None
    training: Training = Field(default_factory=Training)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    deployment: Deployment = Field(default_factory=Deployment)
    #: Tags on the training job, model package, model and endpoint.
    tags: Annotated[dict[str, str], Field(max_length=20)] = Field(default_factory=dict)

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, value: str) -> str:
        if value.startswith("jumpstart:"):
            if not JUMPSTART_ID.match(value):
                raise ValueError(
                    f"{value!r} is not a JumpStart model like 'jumpstart:<model id>' or "
                    "'jumpstart:<model id>@<version>' (ids are lower-case letters, digits, '-')"
                )
        elif value.startswith("s3://"):
            match = S3_URI.match(value)
            if not match or not match.group("key") or not value.endswith("/"):
                raise ValueError(f"{value!r} is not an s3://bucket/prefix/ folder (end it with /)")
        elif not HUB_ID.match(value):
            raise ValueError(
                f"{value!r} is neither a Hub id like 'org/name', an s3:// folder nor "
                "'jumpstart:<model id>'"
            )
        return value

    @model_validator(mode="after")
    def _jumpstart_resolved(self) -> RunRequest:
        match = JUMPSTART_ID.match(self.base_model)
        if match is None:
            if self.jumpstart is not None:
                raise ValueError("jumpstart: only for a base_model 'jumpstart:<model id>'")
            return self
        if self.jumpstart is None:
            return self  # pinned before launch (launch_run.base_models requires it)
        if self.jumpstart.model_id != match.group("model_id"):
            raise ValueError(
                f"jumpstart.model_id {self.jumpstart.model_id!r} is not the model of base_model "
                f"{self.base_model!r}"
            )
        version = match.group("version")
        if version is not None and self.jumpstart.version != version:
            raise ValueError(
                f"jumpstart.version {self.jumpstart.version!r} is not the version base_model "
                f"asks for ({version})"
            )
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not re.match(r"^[\w .:/=+\-@]{1,128}$", key) or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r} is invalid (1-128 chars, not 'aws:')")
            if not re.match(r"^[\w .:/=+\-@]{0,256}$", tag):
                raise ValueError(f"tag value {tag!r} for {key!r} is invalid (0-256 chars)")
        return value

    @property
    def method(self) -> str:
        return self.hyperparameters.method or "lora"


class DeployRequest(_Section):
    """Deploy the registered model of an earlier run; its model package must be Approved.

    This is what ``finetune promote RUN`` starts after approving, and what a console user can
    start to (re)deploy an approved run: ``{"deploy_run": "<run id>"}``.
    """

    deploy_run: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]
    #: None: the run's own deployment settings (enabled).
    deployment: Deployment | None = None


def parse_deploy_request(payload: object) -> DeployRequest:
    """Validate ``payload`` as a deploy request; RunRequestError names each bad field."""
    if not isinstance(payload, Mapping):
        raise RunRequestError([f"(request): must be a JSON object, got {type(payload).__name__}"])
    try:
        return DeployRequest.model_validate(dict(payload))
    except ValidationError as error:
        raise RunRequestError(_describe(error, root=DeployRequest)) from None


def is_deploy_request(payload: object) -> bool:
    return isinstance(payload, Mapping) and "deploy_run" in payload


class RetryRequest(_Section):
    """Resume a run that failed or was stopped, from the first step it did not complete
    (``finetune retry RUN``, or ``{"retry_run": "<run id>"}`` from the console): same run id,
    same inputs, training as a new attempt from the run's checkpoints (runspec.retry)."""

    retry_run: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]


def parse_retry_request(payload: object) -> RetryRequest:
    """Validate ``payload`` as a retry request; RunRequestError names each bad field."""
    if not isinstance(payload, Mapping):
        raise RunRequestError([f"(request): must be a JSON object, got {type(payload).__name__}"])
    try:
        return RetryRequest.model_validate(dict(payload))
    except ValidationError as error:
        raise RunRequestError(_describe(error, root=RetryRequest)) from None


def is_retry_request(payload: object) -> bool:
    return isinstance(payload, Mapping) and "retry_run" in payload


#: A versioned model package's ARN (DescribeModelPackage's ModelPackageArn pattern).
_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]{9,16}:[0-9]{12}:model-package/[a-zA-Z0-9\-]{1,63}/\d+$"
)


class ApprovalRequest(_Section):
    """A model package of the platform's group was approved (in Studio's Model Registry, with
    ``finetune promote``, or through the API): what the platform's approval rule starts the
    workflow with, ``{"approved_package": "<ModelPackageArn>"}`` (the documented event detail
    names the package, not the run). The launch function finds the run the package belongs to
    and hands it to the run's deploy execution when the run asked for deployment."""

    approved_package: str

    @field_validator("approved_package")
    @classmethod
    def _package_arn(cls, value: str) -> str:
        if not _PACKAGE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not a versioned model package ARN "
                "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)"
            )
        return value


def parse_approval_request(payload: object) -> ApprovalRequest:
    """Validate ``payload`` as an approval; RunRequestError names each bad field."""
    if not isinstance(payload, Mapping):
        raise RunRequestError([f"(request): must be a JSON object, got {type(payload).__name__}"])
    try:
        return ApprovalRequest.model_validate(dict(payload))
    except ValidationError as error:
        raise RunRequestError(_describe(error, root=ApprovalRequest)) from None


def is_approval_request(payload: object) -> bool:
    return isinstance(payload, Mapping) and "approved_package" in payload


class UndeployRequest(_Section):
    """Delete an endpoint of the platform, keeping its models, configs and model packages
    (``finetune undeploy``, or the console): ``{"undeploy": "<endpoint name or run id>"}``. The
    platform's idle rule starts ``{"idle_alarm": "<alarm name>"}`` when an endpoint's idle alarm
    fires (launch_run.undeploy checks the alarm). The change is recorded on the run the endpoint
    serves."""

    #: ``<prefix>-<name>``, ``<name>`` (the request's deployment.endpoint_name), or a run id
    #: (the endpoint that run was last deployed to).
    undeploy: Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME)] | None = None
    #: The idle alarm that fired (set by the platform's idle rule, not by people).
    idle_alarm: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    #: Who asks, as the caller says (the CLI writes its caller's ARN); CloudTrail's StartExecution
    #: record of the execution is the authoritative one.
    requested_by: Annotated[str, Field(max_length=256)] | None = None
    reason: Annotated[str, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> UndeployRequest:
        if (self.undeploy is None) == (self.idle_alarm is None):
            raise ValueError("give exactly one of undeploy (endpoint or run id) and idle_alarm")
        return self


def parse_undeploy_request(payload: object) -> UndeployRequest:
    """Validate ``payload`` as an undeploy request; RunRequestError names each bad field."""
    if not isinstance(payload, Mapping):
        raise RunRequestError([f"(request): must be a JSON object, got {type(payload).__name__}"])
    try:
        return UndeployRequest.model_validate(dict(payload))
    except ValidationError as error:
        raise RunRequestError(_describe(error, root=UndeployRequest)) from None


def is_undeploy_request(payload: object) -> bool:
    return isinstance(payload, Mapping) and ("undeploy" in payload or "idle_alarm" in payload)


def parse_run_request(payload: object) -> RunRequest:
    """Validate ``payload`` (a decoded JSON/YAML document) as a run request.

    Raises RunRequestError with one ``field: rule`` line per problem.
    """
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise RunRequestError([f"(request): must be a JSON object, got {type(payload).__name__}"])
    try:
        return RunRequest.model_validate(dict(payload))
    except ValidationError as error:
        raise RunRequestError(_describe(error)) from None


def _describe(error: ValidationError, root: type[BaseModel] | None = None) -> list[str]:
    by_field: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        location = [str(part) for part in item["loc"]]
        # Union members add their type name to the location; it means nothing to users. An
        # unknown field's own name (the last part) is the user's, whatever it is ("none", "str").
        keep_last = item["type"] == "extra_forbidden"
        location = [
            part
            for index, part in enumerate(location)
            if not _is_union_tag(part) or (keep_last and index == len(location) - 1)
        ]
        field = ".".join(location) or "(request)"
        if item["type"] == "extra_forbidden":
            message = f"unknown field{_suggestion(location, root or RunRequest)}"
        elif item["type"] == "string_pattern_mismatch":
            message = (
                f"{item['input']!r} must be letters, digits and single hyphens, starting and "
                "ending with a letter or digit"
            )
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            if str(item["type"]).endswith("_type"):  # strict types: say what was given
                message += f" (got {_given(item['input'])})"
        messages = by_field.setdefault(field, [])
        if message not in messages:
            messages.append(message)
    # A union field reports one message per member: say them as alternatives, on one line.
    return [f"{field}: {'; or '.join(messages)}" for field, messages in sorted(by_field.items())]


def _given(value: object) -> str:
    """A value as an error message shows it: its JSON type and (the start of) its value."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    kind = kinds.get(type(value), "list" if isinstance(value, list) else "object")
    text = repr(value) if kind not in ("list", "object") else ""
    if len(text) > 40:
        text = f"{text[:37]}..."
    return f"{kind} {text}".strip()


def _is_union_tag(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "list[str]", "none"} or part.startswith(
        ("literal[", "constrained-", "function-")
    )


def _suggestion(location: list[str], root: type[BaseModel]) -> str:
    model = root
    for part in location[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if _is_model(a)]
        if not candidates:
            return ""
        model = cast(type[BaseModel], candidates[0])
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(location[-1], allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (allowed: {', '.join(allowed)}){hint}"


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)
