"""Figures tests print at the end of the run (failure-walk and IAM coverage).

Tests call ``report(section, line)``; lines go to a JSON-lines file whose path the controlling
pytest process puts in the environment before any test runs, so workers started by pytest-xdist
append to the same file. ``tests/conftest.py`` prints the collected lines in the terminal
summary, grouped by section, with their counts.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

__all__ = ["REPORT_ENV", "collected", "report"]

REPORT_ENV = "FT_TEST_REPORT"


def report(section: str, line: str, count: int = 1) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"section": section, "line": line, "count": count}) + "\n")


def collected(path: Path) -> dict[str, dict[str, int]]:
    """Per section, each distinct line with the sum of its counts."""
    sections: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(raw)
            sections[entry["section"]][entry["line"]] += entry.get("count", 1)
    return {section: dict(lines) for section, lines in sections.items()}
