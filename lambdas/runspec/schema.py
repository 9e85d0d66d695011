"""Write the run request's JSON Schema: ``python -m runspec.schema > docs/run-request.schema.json``.

Editors validate run files against it; the test suite checks the committed copy is current.
"""

from __future__ import annotations

import json
from typing import Any

from runspec.request import RunRequest

__all__ = ["run_request_schema"]


def run_request_schema() -> dict[str, Any]:
    schema = RunRequest.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Fine-tuning run request (schema version 1)"
    return schema


if __name__ == "__main__":
    print(json.dumps(run_request_schema(), indent=2))
