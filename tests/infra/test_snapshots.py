"""One snapshot per stack (dev), asset hashes masked.

Review a diff, then accept it with ``pytest tests/infra --snapshot-update``."""

from __future__ import annotations

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.infra.synth import Synthesized, mask_asset_hashes


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", ["Data", "Network", "Tracking", "Studio", "Workflow"])
def test_stack_matches_snapshot(
    dev: Synthesized, stack: str, snapshot_json: SnapshotAssertion
) -> None:
    assert mask_asset_hashes(dev.templates[stack]) == snapshot_json
