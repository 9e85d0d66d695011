"""Resolve CloudFormation intrinsics in synthesized templates to local values.

The local backend runs the *synthesized* workflow: its state machine definition and its
functions' settings are CloudFormation values (``Fn::Join`` of ``Fn::GetAtt`` and ``Ref``,
imports from other stacks, mappings). This is a small evaluator for the intrinsics CDK emits,
with physical ids supplied by the caller for the resources it creates locally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Intrinsics", "UnresolvableError"]

PSEUDO_PARAMETERS = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "local",
    "AWS::NoValue": None,
}


class UnresolvableError(KeyError):
    """A value refers to something the local backend does not emulate."""


@dataclass
class Intrinsics:
    """Evaluates values of ``templates`` (by stack id).

    ``physical`` maps ``(stack, logical id)`` to the resource's local physical id (what ``Ref``
    returns); ``attribute`` maps ``(stack, logical id, attribute)`` to ``Fn::GetAtt`` values.
    Exports of every template are resolvable through ``Fn::ImportValue``.
    """

    templates: Mapping[str, dict[str, Any]]
    physical: dict[tuple[str, str], str] = field(default_factory=dict)
    attribute: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    attribute_fallback: Callable[[str, str, str], Any] | None = None

    def resolve(self, stack: str, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(stack, item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, stack, argument)
        return {key: self.resolve(stack, item) for key, item in value.items()}

    def export(self, name: str) -> Any:
        for stack, template in self.templates.items():
            for output in template.get("Outputs", {}).values():
                export = output.get("Export", {}).get("Name")
                if export is not None and self.resolve(stack, export) == name:
                    return self.resolve(stack, output["Value"])
        raise UnresolvableError(f"no stack exports {name!r}")

    def logical_ids(self, stack: str, resource_type: str) -> list[str]:
        resources = self.templates[stack]["Resources"]
        return [name for name, r in resources.items() if r["Type"] == resource_type]

    def properties(self, stack: str, logical_id: str) -> dict[str, Any]:
        resource = self.templates[stack]["Resources"][logical_id]
        return dict(self.resolve(stack, resource.get("Properties", {})))


def _ref(self: Intrinsics, stack: str, name: str) -> Any:
    if name in PSEUDO_PARAMETERS:
        return PSEUDO_PARAMETERS[name]
    try:
        return self.physical[(stack, name)]
    except KeyError:
        raise UnresolvableError(f"{stack}: Ref {name} is not emulated locally") from None


def _get_att(self: Intrinsics, stack: str, argument: list[str]) -> Any:
    logical_id, attribute = argument[0], argument[1]
    key = (stack, logical_id, attribute)
    if key in self.attribute:
        return self.attribute[key]
    if self.attribute_fallback is not None:
        return self.attribute_fallback(stack, logical_id, attribute)
    raise UnresolvableError(f"{stack}: GetAtt {logical_id}.{attribute} is not emulated locally")


def _join(self: Intrinsics, stack: str, argument: list[Any]) -> str:
    separator, parts = argument
    return str(separator).join(str(self.resolve(stack, part)) for part in parts)


def _sub(self: Intrinsics, stack: str, argument: Any) -> str:
    text, variables = (argument, {}) if isinstance(argument, str) else argument
    values = {k: self.resolve(stack, v) for k, v in variables.items()}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return str(values[name])
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return str(_get_att(self, stack, [logical_id, attribute]))
        return str(_ref(self, stack, name))

    return re.sub(r"\$\{([^}!]+)\}", replace, text)


def _find_in_map(self: Intrinsics, stack: str, argument: list[Any]) -> Any:
    mapping, first, second = (self.resolve(stack, a) for a in argument)
    return self.templates[stack]["Mappings"][mapping][first][second]


def _import(self: Intrinsics, stack: str, argument: Any) -> Any:
    return self.export(self.resolve(stack, argument))


def _select(self: Intrinsics, stack: str, argument: list[Any]) -> Any:
    index, values = argument
    return self.resolve(stack, values)[int(self.resolve(stack, index))]


def _split(self: Intrinsics, stack: str, argument: list[Any]) -> list[str]:
    separator, text = argument
    return str(self.resolve(stack, text)).split(separator)


def _get_azs(self: Intrinsics, stack: str, argument: Any) -> list[str]:
    region = PSEUDO_PARAMETERS["AWS::Region"]
    return [f"{region}a", f"{region}b"]


_FUNCTIONS: dict[str, Callable[[Intrinsics, str, Any], Any]] = {
    "Ref": _ref,
    "Fn::GetAtt": _get_att,
    "Fn::Join": _join,
    "Fn::Sub": _sub,
    "Fn::FindInMap": _find_in_map,
    "Fn::ImportValue": _import,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::GetAZs": _get_azs,
}
