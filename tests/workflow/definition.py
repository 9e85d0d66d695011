"""The synthesized state machine definition as data, with every resource reference replaced by
a readable placeholder (``<LogicalId>``, ``<LogicalId.Attribute>``)."""

from __future__ import annotations

import json
from typing import Any

from finetune.local.cfn import Intrinsics
from tests.infra.synth import Synthesized


def state_machine_definition(synthesized: Synthesized) -> dict[str, Any]:
    intrinsics = Intrinsics(synthesized.templates)
    intrinsics.attribute_fallback = lambda stack, logical, attribute: f"<{logical}.{attribute}>"
    for stack, template in synthesized.templates.items():
        for logical_id in template["Resources"]:
            intrinsics.physical[(stack, logical_id)] = f"<{logical_id}>"
    (machine,) = intrinsics.logical_ids("Workflow", "AWS::StepFunctions::StateMachine")
    return dict(json.loads(intrinsics.properties("Workflow", machine)["DefinitionString"]))
