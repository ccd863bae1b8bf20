"""What an install prints and records: the license as an SPDX expression (PEP 639), so
setuptools has no deprecation warning to repeat on every build."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

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


@pytest.mark.integration
def test_an_editable_install_prints_no_notice(tmp_path: Path) -> None:
    # What `make install` builds: the project as a .pth line, without setuptools' import
    # hook and the notice it prints on every build, nor a licence deprecation.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "service", project / "service", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, project / name)
    venv.create(tmp_path / "venv", with_pip=False)
    target = tmp_path / "venv" / "bin" / "python"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target),
            "install",
            "-q",
            "-e",
            str(project),
            "--no-deps",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "Editable installation" not in printed
    assert "Deprecat" not in printed and "!!" not in printed, printed
    found = subprocess.run(
        [str(target), "-c", "import service; print(service.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert found.stdout.strip() == str(project / "service" / "__init__.py")
