"""IAM policy evaluation for one account, as the IAM User Guide's evaluation logic describes it.

An authorization request is (principal, action, resource, context keys). Within one account:

1. An explicit ``Deny`` in any applicable policy (identity or resource) wins.
2. Otherwise an ``Allow`` in the principal's identity policies or in the resource's policy (for
   that principal) allows - except for KMS, where the key policy decides: it must allow the
   principal itself, or delegate to IAM by allowing the account root, and then the identity
   policies must allow.
3. Otherwise the request is implicitly denied.

Statements match on Action/NotAction (case-insensitive wildcards), Resource/NotResource
(case-sensitive wildcards, ``${...}`` policy variables from the context), Principal (resource
policies) and Condition: the String, Arn, Numeric, Bool and Null operators, their ``IfExists``
and negated forms, and the ``ForAnyValue:``/``ForAllValues:`` set qualifiers. A key the request
does not carry makes a plain operator false and an ``IfExists`` one true, as in IAM. Operators
the evaluator does not know raise: a policy the twin cannot read must not pass silently.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AccessRequest",
    "Decision",
    "Principal",
    "UnsupportedPolicyError",
    "evaluate",
    "statement_applies",
]

ContextValue = str | bool | int | float | Sequence[str]


class UnsupportedPolicyError(ValueError):
    """A policy uses something this evaluator does not implement."""


@dataclass(frozen=True)
class Principal:
    """Who asks: an IAM role (``arn``) or an AWS service (``service``, e.g.
    ``cloudwatch.amazonaws.com``)."""

    arn: str = ""
    service: str = ""
    account: str = ""

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1] if self.arn else self.service


@dataclass(frozen=True)
class AccessRequest:
    """One authorization: ``action`` (``service:Action``) on ``resource`` (an ARN or ``*``)."""

    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    matched: tuple[str, ...] = ()


def evaluate(
    principal: Principal,
    request: AccessRequest,
    *,
    identity_policies: Iterable[Mapping[str, Any]],
    resource_policy: Mapping[str, Any] | None,
    key_policy: bool = False,
) -> Decision:
    """The decision for ``request`` made by ``principal``.

    ``key_policy``: ``resource_policy`` is a KMS key policy (it must allow, see module doc)."""
    context = {**_global_context(principal), **request.context}
    identity = [] if principal.service else list(identity_policies)
    identity_allow, identity_deny = _matches(identity, request, context, principal=None)
    resource_allow: list[str] = []
    resource_deny: list[str] = []
    delegates = False
    if resource_policy is not None:
        resource_allow, resource_deny = _matches(
            [resource_policy], request, context, principal=principal
        )
        delegates = _delegates_to_iam(resource_policy, request, context, principal)
    denied = identity_deny + resource_deny
    if denied:
        return Decision(False, f"explicitly denied by {', '.join(denied)}", tuple(denied))
    if key_policy:
        if resource_allow:
            return Decision(True, "allowed by the key policy", tuple(resource_allow))
        if delegates and identity_allow:
            reason = "allowed by identity policy (the key policy delegates to IAM)"
            return Decision(True, reason, tuple(identity_allow))
        if delegates:
            return Decision(False, "no identity-based policy allows it")
        return Decision(False, "the key policy neither allows it nor delegates to IAM")
    if identity_allow or resource_allow:
        return Decision(True, "allowed", tuple(identity_allow + resource_allow))
    return Decision(False, "no identity-based or resource-based policy allows it")


def _global_context(principal: Principal) -> dict[str, ContextValue]:
    context: dict[str, ContextValue] = {"aws:SecureTransport": True}
    if principal.arn:
        context["aws:PrincipalArn"] = principal.arn
    if principal.account:
        context["aws:PrincipalAccount"] = principal.account
    if principal.service:
        context["aws:PrincipalServiceName"] = principal.service
    return context


def _matches(
    policies: Iterable[Mapping[str, Any]],
    request: AccessRequest,
    context: Mapping[str, ContextValue],
    *,
    principal: Principal | None,
) -> tuple[list[str], list[str]]:
    allows: list[str] = []
    denies: list[str] = []
    for policy in policies:
        for index, statement in enumerate(_statements(policy)):
            if not statement_applies(statement, request, context, principal=principal):
                continue
            label = str(statement.get("Sid") or f"statement {index + 1}")
            (allows if statement.get("Effect") == "Allow" else denies).append(label)
    return allows, denies


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, Mapping) else list(statements)


def statement_applies(
    statement: Mapping[str, Any],
    request: AccessRequest,
    context: Mapping[str, ContextValue],
    *,
    principal: Principal | None,
) -> bool:
    """Whether ``statement`` covers ``request`` (action, resource, principal, conditions)."""
    if not _action_matches(statement, request.action):
        return False
    if not _resource_matches(statement, request.resource, context):
        return False
    if principal is not None and not _principal_matches(statement, principal):
        return False
    return _conditions_hold(statement.get("Condition") or {}, context)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(_wildcard(p, action, ignore_case=True) for p in _listed(statement["Action"]))
    if "NotAction" in statement:
        return not any(
            _wildcard(p, action, ignore_case=True) for p in _listed(statement["NotAction"])
        )
    raise UnsupportedPolicyError(f"statement without Action or NotAction: {statement}")


def _resource_matches(
    statement: Mapping[str, Any], resource: str, context: Mapping[str, ContextValue]
) -> bool:
    if "Resource" in statement:
        patterns = [_substitute(p, context) for p in _listed(statement["Resource"])]
        return any(p is not None and _wildcard(p, resource) for p in patterns)
    if "NotResource" in statement:
        patterns = [_substitute(p, context) for p in _listed(statement["NotResource"])]
        return not any(p is not None and _wildcard(p, resource) for p in patterns)
    # Resource policies may omit Resource: the policy's own resource.
    return True


def _principal_matches(statement: Mapping[str, Any], principal: Principal) -> bool:
    if "NotPrincipal" in statement:
        raise UnsupportedPolicyError("NotPrincipal is not evaluated by the twin")
    value = statement.get("Principal")
    if value is None:
        return False
    if value == "*":
        return True
    if not isinstance(value, Mapping):
        raise UnsupportedPolicyError(f"unexpected Principal {value!r}")
    for kind, names in value.items():
        for name in _listed(names):
            if name == "*":
                return True
            if kind == "Service" and principal.service and name == principal.service:
                return True
            # The account root names no principal by itself: it delegates to the account's
            # identity policies (handled by evaluate for key policies).
            if kind == "AWS" and principal.arn and name == principal.arn:
                return True
    return False


def _delegates_to_iam(
    policy: Mapping[str, Any],
    request: AccessRequest,
    context: Mapping[str, ContextValue],
    principal: Principal,
) -> bool:
    """A key policy statement that allows the account root: identity policies decide."""
    if not principal.arn:
        return False
    root = _root(principal)
    for statement in _statements(policy):
        names = statement.get("Principal")
        accounts = _listed(names.get("AWS")) if isinstance(names, Mapping) else []
        if statement.get("Effect") == "Allow" and root in accounts:
            without_principal = {k: v for k, v in statement.items() if k != "Principal"}
            if statement_applies(without_principal, request, context, principal=None):
                return True
    return False


def _root(principal: Principal) -> str:
    partition = principal.arn.split(":")[1] if principal.arn.count(":") >= 4 else "aws"
    return f"arn:{partition}:iam::{principal.account}:root"


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(pattern: str, context: Mapping[str, ContextValue]) -> str | None:
    """``${aws:username}``-style policy variables; a missing one makes the pattern unusable."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = context.get(match.group(1))
        if isinstance(found, str):
            return found
        missing = True
        return ""

    result = _VARIABLE.sub(value, pattern)
    return None if missing else result


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return _compiled(pattern).fullmatch(value) is not None


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # IAM wildcards: * any run of characters (including none), ? one character; nothing else.
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.S)


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, ContextValue]) -> bool:
    for operator, keys in conditions.items():
        for key, expected in keys.items():
            if not _condition(operator, key, _listed(expected), context):
                return False
    return True


def _condition(
    operator: str, key: str, expected: list[Any], context: Mapping[str, ContextValue]
) -> bool:
    qualifier = ""
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    present = key in context
    if base == "Null":
        wants_absent = str(expected[0]).lower() == "true"
        return (not present) if wants_absent else present
    if not present:
        # IAM: a key missing from the request context makes a condition false, except that
        # negated operators (StringNotEquals, ArnNotLike, ...) and IfExists ones are true, and
        # ForAllValues over an empty set is true.
        return if_exists or qualifier == "ForAllValues" or "Not" in base
    values = _listed(context[key])
    # Policy variables (${aws:username}, ${sagemaker:UserProfileName}) in condition values.
    expected = [
        substituted
        for option in expected
        if (substituted := _substitute(option, context) if isinstance(option, str) else option)
        is not None
    ]
    compare = _comparator(base)
    if qualifier == "ForAllValues":
        return all(compare(v, expected) for v in values)
    if qualifier == "ForAnyValue" or len(values) > 1:
        return any(compare(v, expected) for v in values)
    return compare(values[0], expected)


def _comparator(operator: str) -> Any:
    def matching(ignore_case: bool, wildcard: bool) -> Any:
        def compare(value: Any, expected: list[Any]) -> bool:
            text = str(value)
            for option in expected:
                option = str(option)
                if wildcard and _wildcard(option, text, ignore_case=ignore_case):
                    return True
                if not wildcard and (
                    text.lower() == option.lower() if ignore_case else text == option
                ):
                    return True
            return False

        return compare

    def negated(inner: Any) -> Any:
        return lambda value, expected: not inner(value, expected)

    def numeric(test: Any) -> Any:
        return lambda value, expected: any(test(float(value), float(e)) for e in expected)

    table = {
        "StringEquals": matching(False, False),
        "StringEqualsIgnoreCase": matching(True, False),
        "StringLike": matching(False, True),
        "StringNotEquals": negated(matching(False, False)),
        "StringNotEqualsIgnoreCase": negated(matching(True, False)),
        "StringNotLike": negated(matching(False, True)),
        "ArnEquals": matching(False, True),
        "ArnLike": matching(False, True),
        "ArnNotEquals": negated(matching(False, True)),
        "ArnNotLike": negated(matching(False, True)),
        "Bool": lambda value, expected: any(str(value).lower() == str(e).lower() for e in expected),
        "NumericEquals": numeric(lambda a, b: a == b),
        "NumericNotEquals": numeric(lambda a, b: a != b),
        "NumericLessThan": numeric(lambda a, b: a < b),
        "NumericLessThanEquals": numeric(lambda a, b: a <= b),
        "NumericGreaterThan": numeric(lambda a, b: a > b),
        "NumericGreaterThanEquals": numeric(lambda a, b: a >= b),
    }
    if operator not in table:
        raise UnsupportedPolicyError(
            f"condition operator {operator!r} is not evaluated by the twin"
        )
    return table[operator]
