"""What the platform tells its Lambdas (and the local backend) through environment variables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

__all__ = ["PlatformSettings", "SettingsError"]


class SettingsError(RuntimeError):
    """The function's environment is incomplete: a deployment problem, not a user error."""


@dataclass(frozen=True, kw_only=True)
class PlatformSettings:
    """Deployment facts the launch and record steps need. Read from ``FT_*`` variables."""

    prefix: str
    region: str
    datasets_bucket: str
    artifacts_bucket: str
    state_machine_arn: str
    #: The platform's training image in ECR (repository URI with tag).
    custom_image_uri: str
    #: The AWS Hugging Face training image (script mode) and the training_code/ tarball.
    script_mode_image_uri: str
    script_source_s3_uri: str
    default_training_instance_type: str
    allowed_training_instance_types: tuple[str, ...]
    default_endpoint_instance_type: str
    model_package_group: str
    model_approval_status: str
    internet_egress: bool
    #: The platform key: training volumes on EBS-backed instance types are encrypted with it.
    kms_key_arn: str = ""
    #: Whether a run may set trust_remote_code (run code shipped with a model).
    allow_trust_remote_code: bool = False
    #: The MLflow App ARN, or "" when MLflow is off.
    mlflow_tracking_arn: str = ""
    #: How often and how many times the workflow checks a deploying endpoint (60 s x 60 = 1 h).
    endpoint_poll_seconds: int = 60
    endpoint_max_polls: int = 60
    #: The most instances one training job may use (a request's training.instance_count).
    max_training_instances: int = 1
    #: Bedrock models a run may use as its judge (evaluation.judge.model_id); none by default.
    judge_model_ids: tuple[str, ...] = ()
    #: Training that fails for want of capacity is retried this many times per execution under
    #: a new attempt (runspec.attempts), the first retry after this many seconds, then doubling.
    training_capacity_retries: int = 2
    training_capacity_backoff_seconds: int = 900

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PlatformSettings:
        values: dict[str, object] = {}
        missing: list[str] = []
        for f in fields(cls):
            name = _variable(f.name)
            if name not in environ:
                if f.name not in _OPTIONAL:
                    missing.append(name)
                continue
            raw = environ[name]
            if f.name in ("allowed_training_instance_types", "judge_model_ids"):
                values[f.name] = tuple(json.loads(raw))
            elif f.name in ("internet_egress", "allow_trust_remote_code"):
                values[f.name] = raw.lower() == "true"
            elif f.name in (
                "endpoint_poll_seconds",
                "endpoint_max_polls",
                "max_training_instances",
                "training_capacity_retries",
                "training_capacity_backoff_seconds",
            ):
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        if missing:
            raise SettingsError(f"function environment lacks {', '.join(missing)}")
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment variables that ``from_env`` reads back."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if isinstance(value, tuple):
                out[_variable(name)] = json.dumps(list(value))
            elif isinstance(value, bool):
                out[_variable(name)] = "true" if value else "false"
            else:
                out[_variable(name)] = str(value)
        return out


_OPTIONAL = (
    "kms_key_arn",
    "allow_trust_remote_code",
    "mlflow_tracking_arn",
    "endpoint_poll_seconds",
    "endpoint_max_polls",
    "max_training_instances",
    "judge_model_ids",
    "training_capacity_retries",
    "training_capacity_backoff_seconds",
)


def _variable(field_name: str) -> str:
    return f"FT_{field_name.upper()}"
