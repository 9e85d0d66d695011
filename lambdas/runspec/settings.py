"""What the platform tells its Lambdas (and the local backend) through environment variables.

One typed declaration (a frozen pydantic model): each field's type and default are the rule for
its ``FT_<NAME>`` variable; the stack writes them with ``to_env`` and the functions read them
back with ``from_env``, which names every missing or malformed variable."""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["PlatformSettings", "SettingsError"]


class SettingsError(RuntimeError):
    """The function's environment is incomplete: a deployment problem, not a user error."""


class PlatformSettings(BaseModel):
    """Deployment facts the launch and record steps need. Read from ``FT_*`` variables."""

    # Strict: "maybe" is not a boolean and "sixty" not a number (the environment is strings,
    # converted by from_env before validation); unknown fields are errors.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

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
        problems: list[str] = []
        for name, field in cls.model_fields.items():
            variable = _variable(name)
            if variable not in environ:
                continue  # a required one is reported missing by validation
            try:
                values[name] = _parse(environ[variable], field.annotation)
            except ValueError as error:
                problems.append(f"{variable}: {error}")
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            missing = [
                _variable(str(e["loc"][0])) for e in error.errors() if e["type"] == "missing"
            ]
            if missing:
                raise SettingsError(f"function environment lacks {', '.join(missing)}") from None
            problems += [f"{_variable(str(e['loc'][0]))}: {e['msg']}" for e in error.errors()]
        if problems:
            raise SettingsError(f"function environment: {'; '.join(problems)}")
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment variables that ``from_env`` reads back."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, tuple):
                out[_variable(name)] = json.dumps(list(value))
            elif isinstance(value, bool):
                out[_variable(name)] = "true" if value else "false"
            else:
                out[_variable(name)] = str(value)
        return out


def _parse(raw: str, annotation: object) -> object:
    """A variable's string as its field's type: a JSON list for tuples, true/false for
    booleans, a decimal for integers."""
    if typing.get_origin(annotation) is tuple:
        decoded = json.loads(raw) if raw.startswith("[") else None
        if not isinstance(decoded, list):
            raise ValueError(f"expected a JSON list, got {raw[:60]!r}")
        return tuple(decoded)
    if annotation is bool:
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {raw[:60]!r}")
        return raw.lower() == "true"
    if annotation is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw[:60]!r}") from None
    return raw


def _variable(field_name: str) -> str:
    return f"FT_{field_name.upper()}"
