"""What an install prints and records: the license as an SPDX expression (PEP 639), so
setuptools has no deprecation warning to repeat on every build."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    config = pyproject()
    project = config["project"]
    assert isinstance(project, dict) and project["license"] == "MIT"
    build = config["build-system"]
    assert isinstance(build, dict)
    [setuptools] = [r for r in build["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=([0-9]+)", setuptools)
    assert found and int(found.group(1)) >= 77  # the first setuptools with PEP 639 licenses


def test_the_installed_metadata_carries_the_license_expression() -> None:
    # Metadata 2.4's License-Expression is only written from the string form; a build
    # from the deprecated table writes the old License field (reinstall: `make install`).
    metadata = importlib.metadata.metadata("zipedge")
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License"] is None


def test_make_says_what_it_does_before_pip_starts() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in recipe.splitlines()[1:]]
    assert lines[0].startswith("@echo ") and "pip" in lines[0]
    assert any("pip install" in line for line in lines[1:])
