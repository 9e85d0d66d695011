"""Typed, per-environment configuration.

One frozen dataclass instance per environment, chosen with ``-c env=NAME``. Synth reads nothing
else: no environment variables besides ``CDK_DEFAULT_*`` (resolved in ``app.py``) and no AWS calls.
Every value is validated when the instance is built, so a bad value stops synth with a message that
names the key.

Over 400 lines as one idea: the configuration type, its per-key validation and the
environments it defines.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields

from runspec.attempts import MAX_BACKOFF_SECONDS, MAX_CAPACITY_RETRIES
from runspec.setup import MAX_INSTANCE_COUNT

__all__ = [
    "ENVIRONMENTS",
    "ConfigError",
    "ExistingVpc",
    "PlatformConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
_USER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_ROUTE_TABLE_ID = re.compile(r"^rtb-[0-9a-f]{8,17}$")
_AZ = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_APPROVAL_STATUSES = ("PendingManualApproval", "Approved")
#: A Bedrock foundation model id: ``<provider>.<model>`` (e.g. amazon.nova-micro-v1:0).
_BEDROCK_MODEL_ID = re.compile(r"^[a-z0-9-]+\.[a-zA-Z0-9][a-zA-Z0-9.:_-]{0,120}$")
#: The geographic prefixes of cross-Region (system-defined) inference profile ids
#: (``eu.anthropic...``): invoking one needs the profile and the model in every destination
#: Region, which the platform does not grant.
_INFERENCE_PROFILE_PREFIXES = ("us", "us-gov", "eu", "apac", "jp", "au", "ca", "global")

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
_LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ExistingVpc:
    """A VPC that already exists, described by ids so synth needs no lookup.

    Endpoints and the platform's security groups are created in it; its subnets must be private.
    """

    vpc_id: str
    availability_zones: tuple[str, ...]
    private_subnet_ids: tuple[str, ...]
    private_subnet_route_table_ids: tuple[str, ...]
    #: Must be the VPC's primary CIDR: endpoint security groups admit HTTPS from it.
    cidr: str

    def validate(self, key: str) -> None:
        _check(_VPC_ID.match(self.vpc_id), f"{key}.vpc_id", self.vpc_id, "a vpc-… id")
        _check(
            len(self.availability_zones) >= 2,
            f"{key}.availability_zones",
            self.availability_zones,
            "at least two zones (Studio and training need subnets in two AZs)",
        )
        for zone in self.availability_zones:
            _check(_AZ.match(zone), f"{key}.availability_zones", zone, "an AZ name like eu-west-1a")
        _check(
            len(self.private_subnet_ids) == len(self.availability_zones),
            f"{key}.private_subnet_ids",
            self.private_subnet_ids,
            "one subnet per availability zone",
        )
        for subnet in self.private_subnet_ids:
            _check(_SUBNET_ID.match(subnet), f"{key}.private_subnet_ids", subnet, "a subnet-… id")
        _check(
            len(self.private_subnet_route_table_ids) == len(self.private_subnet_ids),
            f"{key}.private_subnet_route_table_ids",
            self.private_subnet_route_table_ids,
            "one route table per subnet",
        )
        for table in self.private_subnet_route_table_ids:
            _check(
                _ROUTE_TABLE_ID.match(table),
                f"{key}.private_subnet_route_table_ids",
                table,
                "an rtb-… id",
            )
        _check_cidr(f"{key}.cidr", self.cidr)


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    """Everything that differs between environments. Defaults are the ``dev`` values."""

    #: Environment name, as given to ``-c env=NAME``.
    env_name: str
    #: Prefix of every stack and named resource (lower case, 3-20 chars). Keep it short:
    #: SageMaker names are limited to 63 characters and derived names append to it.
    prefix: str
    #: Target account and region. ``None`` synthesizes an environment-agnostic template
    #: (regional values resolve at deploy time through CloudFormation mappings).
    account: str | None = None
    region: str | None = None

    # Network
    #: CIDR of the VPC the platform creates; ignored when ``existing_vpc`` is set.
    vpc_cidr: str = "10.64.0.0/16"
    existing_vpc: ExistingVpc | None = None
    #: NAT egress for Hugging Face Hub downloads. Off for regulated accounts: base models are then
    #: staged in S3 and given as ``s3://`` URIs.
    internet_egress: bool = True

    # Studio
    studio_users: tuple[str, ...] = ()
    studio_default_instance_type: str = "ml.t3.medium"
    #: JupyterLab apps shut down after this many idle minutes.
    studio_idle_timeout_minutes: int = 60

    # Training and serving
    training_instance_type: str = "ml.g5.2xlarge"
    endpoint_instance_type: str = "ml.g5.2xlarge"
    #: Allow-list of training instance types a run request may ask for.
    allowed_training_instance_types: tuple[str, ...] = (
        "ml.g5.xlarge",
        "ml.g5.2xlarge",
        "ml.g5.12xlarge",
        "ml.g5.48xlarge",
        "ml.g6.xlarge",
        "ml.g6.2xlarge",
        "ml.g6.12xlarge",
        "ml.g6e.xlarge",
        "ml.g6e.2xlarge",
        "ml.g6e.12xlarge",
        "ml.p4d.24xlarge",
        "ml.p5.48xlarge",
    )
    #: The most instances one training job may use (a request's ``training.instance_count``);
    #: a multi-instance job runs one process per GPU on every instance (torchrun, DDP or FSDP).
    max_training_instances: int = 4
    #: Training that fails for want of capacity (CapacityError, a spot wait that expired) is
    #: retried this many times per run execution, each under a new attempt that resumes from the
    #: run's checkpoints (runspec.attempts); the first retry waits this many minutes, each next
    #: one twice as long (at most an hour).
    training_capacity_retries: int = 2
    training_capacity_backoff_minutes: int = 15
    #: Initial approval status of registered model packages.
    model_approval_status: str = "PendingManualApproval"
    #: Whether a run may set trust_remote_code: code shipped with a model then runs inside the
    #: training job with the training role's permissions. Off unless the team reviews models.
    allow_trust_remote_code: bool = False
    #: Amazon Bedrock foundation models a run may use as its judge (``evaluation.judge``): the
    #: training role may invoke exactly these, in the platform's region, and the launch refuses
    #: any other. Each must be enabled in the account. Empty: no judge. A non-empty list adds
    #: a bedrock-runtime VPC endpoint (the judge's only way out of a VPC without egress).
    judge_model_ids: tuple[str, ...] = ()

    # Retention
    #: Checkpoints under ``checkpoints/`` in the artifacts bucket expire after this many days.
    checkpoint_expiry_days: int = 14
    #: S3 server access logs expire after this many days.
    access_log_retention_days: int = 365
    #: CloudWatch log groups (flow logs, Lambdas, state machine) keep events this long.
    log_retention_days: int = 365

    # Tracking
    mlflow_enabled: bool = True

    # Notifications
    #: E-mail addresses subscribed to run notifications (each must confirm the subscription).
    notification_emails: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        key = f"env '{self.env_name}'"
        _check(_PREFIX.match(self.prefix), f"{key}: prefix", self.prefix, _PREFIX_RULE)
        if self.account is not None:
            _check(_ACCOUNT.match(self.account), f"{key}: account", self.account, "12 digits")
        if self.region is not None:
            _check(_REGION.match(self.region), f"{key}: region", self.region, "e.g. eu-west-1")
        _check_cidr(f"{key}: vpc_cidr", self.vpc_cidr)
        if self.existing_vpc is not None:
            self.existing_vpc.validate(f"{key}: existing_vpc")
        seen: set[str] = set()
        for user in self.studio_users:
            _check(_USER_NAME.match(user), f"{key}: studio_users", user, _USER_RULE)
            _check(user not in seen, f"{key}: studio_users", user, "unique names")
            seen.add(user)
        for name in (
            "studio_default_instance_type",
            "training_instance_type",
            "endpoint_instance_type",
        ):
            value = getattr(self, name)
            _check(_INSTANCE_TYPE.match(value), f"{key}: {name}", value, "like ml.g5.2xlarge")
        for value in self.allowed_training_instance_types:
            _check(
                _INSTANCE_TYPE.match(value),
                f"{key}: allowed_training_instance_types",
                value,
                "like ml.g5.2xlarge",
            )
        _check(
            self.training_instance_type in self.allowed_training_instance_types,
            f"{key}: training_instance_type",
            self.training_instance_type,
            "one of allowed_training_instance_types",
        )
        _check(
            type(self.max_training_instances) is int
            and 1 <= self.max_training_instances <= MAX_INSTANCE_COUNT,
            f"{key}: max_training_instances",
            self.max_training_instances,
            f"a whole number from 1 to {MAX_INSTANCE_COUNT} (a run request's most)",
        )
        _check(
            type(self.training_capacity_retries) is int
            and 0 <= self.training_capacity_retries <= MAX_CAPACITY_RETRIES,
            f"{key}: training_capacity_retries",
            self.training_capacity_retries,
            f"a whole number from 0 to {MAX_CAPACITY_RETRIES}",
        )
        _check(
            type(self.training_capacity_backoff_minutes) is int
            and 0 <= self.training_capacity_backoff_minutes <= MAX_BACKOFF_SECONDS // 60,
            f"{key}: training_capacity_backoff_minutes",
            self.training_capacity_backoff_minutes,
            f"a whole number of minutes from 0 to {MAX_BACKOFF_SECONDS // 60}",
        )
        _check(
            5 <= self.studio_idle_timeout_minutes <= 525600,
            f"{key}: studio_idle_timeout_minutes",
            self.studio_idle_timeout_minutes,
            "between 5 and 525600 (SageMaker's limits)",
        )
        _check(
            self.model_approval_status in _APPROVAL_STATUSES,
            f"{key}: model_approval_status",
            self.model_approval_status,
            f"one of {', '.join(_APPROVAL_STATUSES)}",
        )
        for name in ("checkpoint_expiry_days", "access_log_retention_days"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and value >= 1,
                f"{key}: {name}",
                value,
                "a whole number of days ≥ 1",
            )
        _check(
            self.log_retention_days in _LOG_RETENTION_DAYS,
            f"{key}: log_retention_days",
            self.log_retention_days,
            "a period CloudWatch Logs accepts (e.g. 365, 731, 3653)",
        )
        self._check_judge_model_ids(key)
        for email in self.notification_emails:
            _check(_EMAIL.match(email), f"{key}: notification_emails", email, "an e-mail address")
        for f in fields(self):
            if f.type in ("bool",):
                _check(
                    isinstance(getattr(self, f.name), bool),
                    f"{key}: {f.name}",
                    getattr(self, f.name),
                    "true or false",
                )

    def _check_judge_model_ids(self, key: str) -> None:
        name = f"{key}: judge_model_ids"
        _check(
            isinstance(self.judge_model_ids, tuple),
            name,
            self.judge_model_ids,
            "a tuple of Bedrock foundation model ids",
        )
        for model_id in self.judge_model_ids:
            _check(
                isinstance(model_id, str) and _BEDROCK_MODEL_ID.match(model_id),
                name,
                model_id,
                "a Bedrock foundation model id like 'amazon.nova-micro-v1:0' (not an ARN)",
            )
            _check(
                model_id.split(".", 1)[0] not in _INFERENCE_PROFILE_PREFIXES,
                name,
                model_id,
                "a foundation model id, not a cross-Region inference profile (the training "
                "role is granted foundation models in the platform's region only)",
            )
        _check(
            len(set(self.judge_model_ids)) == len(self.judge_model_ids),
            name,
            self.judge_model_ids,
            "unique ids",
        )

    # Derived names. Deterministic names let a stateful stack scope IAM to resources that a
    # later (stateless) stack creates, without a cross-stack cycle.
    @property
    def state_machine_name(self) -> str:
        return f"{self.prefix}-finetune"

    @property
    def model_package_group_name(self) -> str:
        return f"{self.prefix}-models"

    @property
    def mlflow_app_name(self) -> str:
        return f"{self.prefix}-mlflow"

    @property
    def resource_name_prefix(self) -> str:
        """Prefix of SageMaker jobs, models and endpoints the workflow creates."""
        return self.prefix

    @property
    def launch_function_name(self) -> str:
        """Fixed, so that the Studio role (another stack) may read its configuration."""
        return f"{self.prefix}-launch-run"

    def stack_name(self, part: str) -> str:
        return f"{self.prefix}-{part}"


_PREFIX_RULE = "3-20 characters: lower-case letters, digits and '-', starting with a letter"
_USER_RULE = "1-63 characters: letters, digits and '-' (SageMaker user profile name rules)"


def _check(ok: object, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is invalid: expected {rule}")


def _check_cidr(key: str, value: str) -> None:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is invalid: expected an IPv4 CIDR") from None
    _check(
        16 <= network.prefixlen <= 24,
        key,
        value,
        "a /16 to /24 block (room for two private subnets per AZ)",
    )


ENVIRONMENTS: dict[str, PlatformConfig] = {
    # Environment-agnostic: deploys to whatever account/region the CLI credentials point at.
    "dev": PlatformConfig(
        env_name="dev",
        prefix="llmft-dev",
        studio_users=("data-scientist",),
    ),
    # An example of a regulated production account: no internet egress (base models are staged in
    # S3), an existing VPC owned by the network team, longer log retention. Replace the ids.
    "prod": PlatformConfig(
        env_name="prod",
        prefix="llmft-prod",
        account="111122223333",
        region="eu-west-1",
        existing_vpc=ExistingVpc(
            vpc_id="vpc-0a1b2c3d4e5f60718",
            availability_zones=("eu-west-1a", "eu-west-1b"),
            private_subnet_ids=("subnet-0a1b2c3d4e5f60718", "subnet-1a2b3c4d5e6f70819"),
            private_subnet_route_table_ids=("rtb-0a1b2c3d4e5f60718", "rtb-1a2b3c4d5e6f70819"),
            cidr="10.20.0.0/16",
        ),
        internet_egress=False,
        studio_users=("ml-lead", "data-scientist-1", "data-scientist-2"),
        training_instance_type="ml.g5.12xlarge",
        endpoint_instance_type="ml.g5.2xlarge",
        # Runs may ask this model to grade their answers (evaluation.judge); it must be enabled
        # in the account and offered on demand in the region.
        judge_model_ids=("anthropic.claude-3-haiku-20240307-v1:0",),
        checkpoint_expiry_days=30,
        access_log_retention_days=2557,
        log_retention_days=2557,
    ),
    # The platform as the local backend (`finetune --local`, `make demo`) and the workflow tests
    # run it: no account, no internet (base models come from the emulated datasets bucket), and
    # models approved on registration so that a run deploys to the local endpoint.
    "local": PlatformConfig(
        env_name="local",
        prefix="llmft-local",
        internet_egress=False,
        model_approval_status="Approved",
        training_instance_type="ml.g5.xlarge",
        endpoint_instance_type="ml.g5.xlarge",
    ),
}


def load_config(env_name: str | None) -> PlatformConfig:
    """The configuration for ``env_name`` (``dev`` when not given)."""
    name = env_name or "dev"
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ConfigError(f"env: unknown environment {name!r}; known: {known}") from None
