"""AWS's documented parameter constraints, checked on every request to the services the
platform drives.

botocore ships each API's model with the constraints its reference documents - required members,
string lengths, patterns, enums, list and map sizes, numeric ranges - but validates only types
and minimums on the client side; moto checks almost none of them. AWS rejects a request that
breaks any of them with a ValidationException ("1 validation error detected: Value ... at
'resourceConfig.instanceType' failed to satisfy constraint: ..."). This check does the same, from
the same model, so a request that would not pass AWS's validation fails in the twin too.
"""

from __future__ import annotations

import functools
from typing import Any

from finetune.local.call_hook import ApiCall, refusal

__all__ = ["VALIDATED_SERVICES", "check_request_shape", "constraint_violations"]

#: Services whose requests the platform builds from user input or derived names.
VALIDATED_SERVICES = frozenset({"sagemaker", "stepfunctions", "sagemaker-runtime", "sns"})
_MAX_REPORTED = 3


def check_request_shape(call: ApiCall) -> None:
    if call.service not in VALIDATED_SERVICES:
        return
    shape = call.client.meta.service_model.operation_model(call.operation).input_shape
    if shape is None:
        return
    violations = constraint_violations(shape, call.params, "")
    if violations:
        shown = violations[:_MAX_REPORTED]
        raise refusal(
            call,
            "ValidationException",
            f"{len(violations)} validation error{'s' if len(violations) > 1 else ''} detected: "
            + "; ".join(shown),
        )


def constraint_violations(shape: Any, value: Any, location: str) -> list[str]:
    """Every constraint of ``shape`` that ``value`` breaks, in AWS's wording."""
    kind = shape.type_name
    metadata = shape.metadata
    if kind == "structure":
        return _structure(shape, value, location)
    if kind == "list":
        problems = _size(metadata, len(value), location, value, "length")
        for index, item in enumerate(value, start=1):
            problems += constraint_violations(shape.member, item, f"{location}.{index}.member")
        return problems
    if kind == "map":
        problems = _size(metadata, len(value), location, value, "length")
        for key, item in value.items():
            problems += constraint_violations(shape.key, key, f"{location}.{key}.key")
            problems += constraint_violations(shape.value, item, f"{location}.{key}.value")
        return problems
    if kind == "string":
        problems = _size(metadata, len(value), location, value, "length")
        enum = shape.enum
        if enum and value not in enum:
            problems.append(
                _failed(location, value, f"Member must satisfy enum value set: [{', '.join(enum)}]")
            )
        pattern = metadata.get("pattern")
        if pattern and not _matches(pattern, value):
            problems.append(
                _failed(
                    location, value, f"Member must satisfy regular expression pattern: {pattern}"
                )
            )
        return problems
    if kind in ("integer", "long", "float", "double"):
        problems = []
        if "min" in metadata and value < metadata["min"]:
            problems.append(
                _failed(
                    location,
                    value,
                    f"Member must have value greater than or equal to {metadata['min']}",
                )
            )
        if "max" in metadata and value > metadata["max"]:
            problems.append(
                _failed(
                    location,
                    value,
                    f"Member must have value less than or equal to {metadata['max']}",
                )
            )
        return problems
    return []


def _structure(shape: Any, value: Any, location: str) -> list[str]:
    problems = []
    for name in shape.required_members:
        if value.get(name) is None:
            problems.append(_failed(_join(location, name), None, "Member must not be null"))
    for name, member in shape.members.items():
        if value.get(name) is not None:
            problems += constraint_violations(member, value[name], _join(location, name))
    return problems


def _size(metadata: dict[str, Any], size: int, location: str, value: Any, what: str) -> list[str]:
    problems = []
    if "min" in metadata and size < metadata["min"]:
        problems.append(
            _failed(
                location,
                value,
                f"Member must have {what} greater than or equal to {metadata['min']}",
            )
        )
    if "max" in metadata and size > metadata["max"]:
        problems.append(
            _failed(
                location, value, f"Member must have {what} less than or equal to {metadata['max']}"
            )
        )
    return problems


def _join(location: str, name: str) -> str:
    member = name[:1].lower() + name[1:]
    return f"{location}.{member}" if location else member


def _failed(location: str, value: Any, constraint: str) -> str:
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return f"Value {shown} at '{location}' failed to satisfy constraint: {constraint}"


@functools.cache
def _compiled(pattern: str) -> Any:
    import regex  # Java-style classes (\p{L}) that re lacks; installed with transformers

    try:
        return regex.compile(pattern, flags=regex.DOTALL)
    except regex.error:
        return None  # a pattern only Java understands: not checked


def _matches(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return compiled is None or compiled.fullmatch(value) is not None
