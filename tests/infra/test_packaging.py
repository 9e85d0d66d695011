"""The installed package holds every module: pyproject lists packages explicitly (three source
roots), so a new subpackage that is not listed is missing from a non-editable install."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_python_folder_is_a_listed_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = config["package-dir"]
    listed = set(config["packages"])
    for package, root in roots.items():
        base = REPO / root
        for module in base.rglob("*.py"):
            if "__pycache__" in module.parts:
                continue
            folder = module.parent.relative_to(base)
            name = ".".join([package, *folder.parts])
            assert (module.parent / "__init__.py").is_file(), f"{module.parent} has no __init__.py"
            assert name in listed, f"{name} ({module.parent}) is not in pyproject's packages"
