"""The run document: what the launch function resolves a request into and every later step reads.

It travels in the execution's state as ``$.run``; the state machine's JSONPaths, the record
function, the CLI and the local backend all read it as this type. A test checks that every
``$.run...`` path in the synthesized definition exists in ``RunDocument``'s JSON schema, so a
renamed field breaks a test, not a run. ``TrainedRecord`` is the same for ``$.recorded`` (what the
record function returns after training, including the gate's decision, made once, there).

Names of SageMaker API structures (``resource_config``, ``stopping_condition``,
``input_data_config``, serving environment) are serialized exactly as the API takes them: the
state machine passes them through unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from runspec.request import Evaluation

__all__ = [
    "MAX_STATE_BYTES",
    "PACKAGE_METADATA_KEYS",
    "ApprovalOutcome",
    "BestApprovedComparison",
    "CapacityRetry",
    "DeploymentPlan",
    "GateDecision",
    "PinnedDataset",
    "PinnedObject",
    "Registration",
    "ResourceConfig",
    "Resume",
    "RuleResult",
    "RunDocument",
    "ScoringBasis",
    "TrainedRecord",
    "TrainingAttempt",
    "TrainingImage",
    "TrainingJob",
    "UndeployPlan",
]

#: CustomerMetadataProperties the record function writes on every model package: lineage at a
#: glance, and the metric values later runs' gates compare against. Nobody may rewrite them
#: (the Studio role's approval permission denies it).
PACKAGE_METADATA_KEYS = (
    "run_id",
    "training_job",
    "base_model",
    "training_image",
    "eval_loss",
    "perplexity",
    "train_loss",
    # Task metrics on the test set, and what they were scored on: later runs' gates compare
    # only with packages scored on the same data, tokenizer and generation settings.
    "exact_match",
    "token_f1",
    "rougeL",
    "json_valid",
    "judge_score",
    "scored_on",
    "scored_data_sha256",
    "scored_tokenizer",
    "scored_generation",
    # Both sides of the serving contract (llm_sft.serving_contract's manifest).
    "serving_contract",
    "serving_image",
    "serving_transformers",
    "serving_tokenizers",
    "training_transformers",
    "training_tokenizers",
    "training_torch",
)

#: Step Functions refuses a state input or output over 256 KiB (States.DataLimitExceeded). The run
#: document is part of every state; it must leave room for the rest of the state.
MAX_STATE_BYTES = 256 * 1024


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedObject(_Document):
    key: str
    version_id: str | None
    etag: str
    size: int


class PinnedDataset(_Document):
    """A channel's exact objects at launch: SageMaker reads the latest versions, so these are
    what the job read unless someone wrote the key in between (the job logs sha256s too)."""

    uri: str
    objects: list[PinnedObject]


class TrainingImage(_Document):
    option: Literal["custom-image", "script-mode"]
    uri: str
    digest: str | None = None
    tag: str | None = None
    source_s3_uri: str | None = None


class ResourceConfig(_Document):
    """CreateTrainingJob ``ResourceConfig``. The volume key is set only for instance types with
    EBS storage: SageMaker refuses VolumeKmsKeyId for NVMe instance storage."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    instance_type: str = Field(alias="InstanceType")
    instance_count: int = Field(alias="InstanceCount")
    volume_size_gb: int = Field(alias="VolumeSizeInGB")
    volume_kms_key_id: str | None = Field(default=None, alias="VolumeKmsKeyId")

    @model_serializer(mode="wrap")
    def _api_shape(self, handler: Any) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        return {key: value for key, value in fields.items() if value is not None}


class CapacityRetry(_Document):
    """How the workflow retries training that failed for want of capacity (runspec.attempts):
    at most ``max_retries`` new attempts per execution, waiting ``backoff_seconds[i]`` before
    retry ``i``. From the platform's configuration."""

    max_retries: Annotated[int, Field(ge=0)] = 0
    backoff_seconds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


class TrainingJob(_Document):
    image_uri: str
    instance_type: str
    instance_count: int
    volume_size_gb: int
    resource_config: ResourceConfig
    spot: bool
    #: CreateTrainingJob HyperParameters: strings, as the sagemaker-training toolkit passes them.
    hyperparameters: dict[str, str]
    input_data_config: list[dict[str, Any]]
    output_path: str
    checkpoint_s3_uri: str
    stopping_condition: dict[str, int]
    #: FT_DATASET_IDENTITY: what the job records as its inputs (a training job environment value
    #: is at most 512 characters).
    dataset_identity: Annotated[str, Field(max_length=512)]
    #: FT_EVALUATION: what the job scores and how (runspec.request.Evaluation.job_config, read
    #: by llm_sft.evaluation.EvaluationSettings); an environment value too.
    evaluation_config: Annotated[str, Field(max_length=512)] = "{}"
    #: Capacity failures retried under a new attempt (none in runs recorded before attempts).
    capacity_retry: CapacityRetry = Field(default_factory=CapacityRetry)


class Resume(_Document):
    """``$.run.resume``: where a retried run starts again (``finetune retry``, ``{"retry_run":
    "<run id>"}``) and what the steps it does not repeat produced, from its run record
    (runspec.retry decides): ``training`` (a new attempt, from the run's checkpoints),
    ``recording`` (the job completed: record it), ``registration`` (recorded and passed: register
    it), ``deployment`` (registered: deploy, when the run asks for it) or ``completion``
    (deployed, or nothing to deploy: record the run completed)."""

    step: Literal["training", "recording", "registration", "deployment", "completion"]
    #: Which retry of the run this is (1: the first).
    retry: Annotated[int, Field(ge=1)]
    #: ``$.training`` of the completed job (steps after training).
    training: dict[str, Any] | None = None
    #: ``$.recorded`` of its recorded evaluation (steps after recording).
    recorded: TrainedRecord | None = None
    #: ``$.registration``: the model package (steps after registration).
    registration: dict[str, str] | None = None


class TrainingAttempt(_Document):
    """``$.run.attempt``: the training job the run is on. The launch function starts a run at
    attempt 1 (a retried run after its last attempt); the workflow's "Next training attempt"
    state writes the next one (number + 1, same stem) before a capacity retry."""

    number: Annotated[int, Field(ge=1)]
    #: ``<stem>-a<number>`` (runspec.attempts.attempt_job_name).
    training_job_name: str
    stem: str
    #: Capacity retries made in this execution (bounded by training.capacity_retry).
    capacity_retries: Annotated[int, Field(ge=0)] = 0
    #: The wait before this attempt started (0 for the first).
    backoff_seconds: Annotated[int, Field(ge=0)] = 0


class Registration(_Document):
    model_package_group: str
    approval_status: Literal["PendingManualApproval", "Approved"]


class DeploymentPlan(_Document):
    """What the deploy steps create: names unique per deployment (SageMaker refuses an existing
    model or endpoint config name), the serving container's environment and the wait bounds."""

    enabled: bool
    approved: bool
    endpoint_name: str
    model_name: str
    endpoint_config_name: str
    instance_type: str
    initial_instance_count: int
    #: The serving container's environment, as CreateModel takes it.
    serving_environment: dict[str, str]
    poll_seconds: int
    max_polls: int


class ApprovalOutcome(_Document):
    """What the platform did when a run's model package was approved (``mode: approval``):
    ``deploying`` (the run's deploy execution, started or already there), ``not-requested``
    (the run did not ask for deployment), ``deployed-by-run`` (registered Approved: the run's
    own execution deploys it), ``no-longer-approved`` (changed again before this ran)."""

    model_package_arn: str
    decision: Literal["deploying", "not-requested", "deployed-by-run", "no-longer-approved"]
    reason: str
    deploy_execution_arn: str | None = None


class UndeployPlan(_Document):
    """``$.run.undeploy`` (``mode: undeploy``): the endpoint to delete, what it served and cost
    when the request was resolved, who asked and why, and how long to wait for an endpoint in
    transition (SageMaker refuses DeleteEndpoint while it is Creating/Updating)."""

    endpoint_name: str
    endpoint_config_name: str
    #: The run the endpoint serves (its endpoint config's ``ft:run-id`` tag).
    run_id: str
    instance_type: str | None
    instance_count: int
    #: On-demand USD per hour of the endpoint's instances (runspec.catalog), None when unknown.
    usd_per_hour: float | None
    #: ``request``: a person or tool; ``idle``: the endpoint's idle alarm.
    trigger: Literal["request", "idle"]
    requested_by: str
    reason: str
    #: The alarms the platform created for the endpoint (deleted with it).
    alarm_names: list[str]
    #: Application Auto Scaling's id of the endpoint's variant (deregistered before the delete).
    scaling_resource_id: str
    poll_seconds: int
    max_polls: int


class RunDocument(_Document):
    """``$.run``: a resolved run (``mode: train``), the deployment of an earlier run's
    approved model (``mode: deploy``; then ``model_artifacts`` and ``model_package_arn`` name
    what is deployed), or the handling of a package approval (``mode: approval``: the run as
    recorded, and ``approval`` says what was done), or the deletion of the endpoint that serves
    the run (``mode: undeploy``: ``undeploy`` says which and why)."""

    mode: Literal["train", "deploy", "approval", "undeploy"]
    run_id: str
    execution_name: str | None
    experiment_name: str
    trial_name: str
    #: The stem of the run's training job names, ``<prefix>-<run id>``; each attempt trains as
    #: ``attempt.training_job_name``. (In runs recorded before attempts: the one job's name.)
    training_job_name: str
    #: The validated request with its defaults (schema version 1).
    request: dict[str, Any]
    base_model: str
    datasets: dict[str, PinnedDataset]
    image: TrainingImage
    training: TrainingJob
    #: The gate the run must pass, as requested.
    evaluation: Evaluation
    registration: Registration
    deployment: DeploymentPlan
    tags: list[dict[str, str]]
    model_artifacts: str | None = None
    model_package_arn: str | None = None
    approval: ApprovalOutcome | None = None
    undeploy: UndeployPlan | None = None
    #: The current training attempt.
    attempt: TrainingAttempt
    #: Set when the run is retried: where it starts again (None: from the start).
    resume: Resume | None = None

    @model_validator(mode="before")
    @classmethod
    def _first_attempt(cls, data: Any) -> Any:
        """A run recorded before attempts trained as ``training_job_name`` itself."""
        if isinstance(data, dict) and "attempt" not in data and "training_job_name" in data:
            name = data["training_job_name"]
            data = {**data, "attempt": {"number": 1, "training_job_name": name, "stem": name}}
        return data

    def to_state(self) -> dict[str, Any]:
        """The JSON the workflow carries (API structures in their API shape)."""
        return self.model_dump(mode="json", by_alias=True)


class ScoringBasis(_Document):
    """What a run's metrics were measured on; two runs' metrics are comparable only on the same
    basis (``comparable``).

    ``data_sha256`` is the held-out data's content digest as the job computed it (the test set,
    else the validation channel), or, when the job reported none, ``etag:<digest>`` of the
    pinned objects' ETags; ``tokenizer`` the digest of the tokenizer's vocabulary, special
    tokens and chat template (``model:<base model>`` when unknown); ``generation`` the
    generation settings of generated metrics (None: no generated metric)."""

    dataset: Literal["test", "validation"]
    data_sha256: str
    tokenizer: str
    generation: str | None = None

    def comparable(self, other: ScoringBasis, metric: str) -> bool:
        """Whether ``metric`` of a run scored on ``other`` can be compared with this one's:
        the same data always; the same tokenizer for token metrics (loss, perplexity: per
        token); the same generation settings for generated ones."""
        from runspec.request import TOKEN_METRICS

        if (self.dataset, self.data_sha256) != (other.dataset, other.data_sha256):
            return False
        if metric in TOKEN_METRICS:
            return self.tokenizer == other.tokenizer
        return self.generation == other.generation

    def why_not(self, other: ScoringBasis, metric: str) -> str:
        """Why ``comparable`` is False, in a few words."""
        from runspec.request import TOKEN_METRICS

        if self.dataset != other.dataset:
            return f"scored on its {other.dataset} set, not a {self.dataset} set"
        if self.data_sha256 != other.data_sha256:
            return f"scored on other data ({other.data_sha256[:12]})"
        if metric in TOKEN_METRICS:
            return "another tokenizer"
        return f"other generation settings ({other.generation})"


class RuleResult(_Document):
    """One gate rule, applied."""

    rule: str
    metric: str
    value: float | None
    passed: bool


class BestApprovedComparison(_Document):
    """``must_beat_best_approved`` for one metric: the best comparable Approved package."""

    metric: str
    value: float | None
    best_approved_value: float | None
    best_approved_package: str | None
    #: Approved packages left out because they were scored on another basis.
    not_comparable: int
    passed: bool


class GateDecision(_Document):
    """The gate, decided once by the record function; the state machine branches on ``passed``.

    ``metric``/``value``/``threshold`` name the first rule (the one the shorthand of schema
    version 1 writes), ``rules`` and ``best_approved`` every check made."""

    metric: str
    value: float | None
    threshold: float | None
    must_beat_best_approved: bool
    best_approved_value: float | None
    best_approved_package: str | None
    passed: bool
    reason: str
    rules: list[RuleResult] = Field(default_factory=list)
    best_approved: list[BestApprovedComparison] = Field(default_factory=list)
    basis: ScoringBasis | None = None


class TrainedRecord(_Document):
    """``$.recorded``: the finished job's metrics, the gate's decision and what registration
    attaches to the model package."""

    recorded: Literal["trained"]
    metrics: dict[str, float]
    billable_seconds: int | None
    evaluation: GateDecision
    model_metrics_s3_uri: str
    package_metadata: dict[str, str]
    #: The model's serving_contract.json (None: written before the contract existed).
    serving_contract: dict[str, Any] | None = None
    #: What the metrics were measured on (the gate compared only runs on the same basis).
    scoring: ScoringBasis | None = None
    #: The test set the job scored (uri, version, ETag, sha256, rows) and its tokenizer.
    test_set: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None
    #: The MLflow run the job logged to (the record function adds the later facts to it).
    mlflow_run_id: str | None = None
