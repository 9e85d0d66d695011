"""Print the lines of a requirements file whose package cannot be imported here (stdlib only:
it runs in Studio before anything is installed)."""

from __future__ import annotations

import importlib.util
import re
import sys

#: Distribution name -> the module it provides, where they differ.
MODULES = {"pyyaml": "yaml"}


def missing(lines: list[str]) -> list[str]:
    found = []
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        name = re.split(r"[=<>!~\[ ]", requirement, maxsplit=1)[0].lower()
        module = MODULES.get(name, name.replace("-", "_"))
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is absent
            present = False
        if not present:
            found.append(requirement)
    return found


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        print("\n".join(missing(handle.read().splitlines())))
