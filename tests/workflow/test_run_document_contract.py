"""The state machine reads the run document and the record function's result by JSONPath: every
path it reads must exist in their types, so that renaming a field breaks this test, not a run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from runspec.run import RunDocument, TrainedRecord
from tests.infra.synth import Synthesized
from tests.workflow.definition import state_machine_definition

#: Paths that start in a typed document, and the type.
TYPED = {"$.run": RunDocument, "$.recorded": TrainedRecord}
_PATH = re.compile(r"\$\.(?:run|recorded)(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@pytest.fixture(scope="module")
def definition(dev: Synthesized) -> dict[str, Any]:
    return state_machine_definition(dev)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _exists(schema: dict[str, Any], definitions: dict[str, Any], parts: list[str]) -> bool:
    node = schema
    for part in parts:
        node = _resolve(node, definitions)
        properties = node.get("properties")
        if properties is None:
            # A free-form object (dict[str, ...]): its keys are data, any name may be read.
            return bool(node.get("type") == "object" or node.get("additionalProperties"))
        if part not in properties:
            return False
        node = properties[part]
    return True


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            node = options[0]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def test_every_path_the_state_machine_reads_exists_in_the_typed_documents(
    definition: dict[str, Any],
) -> None:
    read = sorted({m.group(0) for text in _strings(definition) for m in _PATH.finditer(text)})
    assert len(read) > 30  # the state machine reads the run document everywhere
    missing = []
    for path in read:
        root = next(prefix for prefix in TYPED if path == prefix or path.startswith(prefix + "."))
        schema = TYPED[root].model_json_schema(by_alias=True)
        parts = path.removeprefix(root).strip(".").split(".") if path != root else []
        if not _exists(schema, schema.get("$defs", {}), [p for p in parts if p]):
            missing.append(path)
    assert missing == []


def test_the_contract_test_would_catch_a_renamed_field() -> None:
    schema = RunDocument.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    assert _exists(schema, definitions, ["deployment", "endpoint_config_name"])
    assert not _exists(schema, definitions, ["deployment", "endpoint_config"])
    assert _exists(schema, definitions, ["training", "resource_config"])
