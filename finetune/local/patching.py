"""Patches of moto's internals, each declared with the AWS behaviour it reproduces.

A patch is data (owner, attribute, replacement, rule); ``applied`` installs a list of them for
the duration of a block with ``unittest.mock.patch.object`` and restores everything on exit, in
reverse order, whatever happens inside. The rule texts are what the README and the tests list as
what the twin enforces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from unittest import mock

__all__ = ["Patch", "applied"]


@dataclass(frozen=True)
class Patch:
    """Replace ``owner.attribute`` with ``replacement`` because AWS behaves as ``rule`` says."""

    owner: Any
    attribute: str
    replacement: Any
    rule: str


@contextlib.contextmanager
def applied(patches: Sequence[Patch]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(
                mock.patch.object(patch.owner, patch.attribute, patch.replacement, create=True)
            )
        yield
