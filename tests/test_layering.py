"""Architecture rules, enforced: the pure core imports no IO, and no module reads the
environment except the settings."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parent.parent / "service"
PURE = sorted((SERVICE / "archive").glob("*.py"))

#: Standard-library modules that do IO or concurrency: not allowed in the pure core.
IO_STDLIB = {
    "asyncio",
    "io",
    "os",
    "pathlib",
    "shutil",
    "socket",
    "ssl",
    "subprocess",
    "tempfile",
    "threading",
    "multiprocessing",
    "concurrent",
    "urllib",
    "http",
    "select",
    "selectors",
    "mmap",
    "signal",
    "logging",
    "sqlite3",
    "glob",
    "fcntl",
}
ALLOWED_PROJECT = ("service.archive", "service.constants", "service.exceptions")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_pure_core_imports_no_io(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        if top == "service":
            assert name.startswith(ALLOWED_PROJECT), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names, f"{path.name} imports third-party {name}"
            assert top not in IO_STDLIB, f"{path.name} imports IO module {name}"


def test_the_pure_core_exists() -> None:
    assert {p.name for p in PURE} >= {"layout.py", "manifest.py", "names.py", "selection.py"}


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in SERVICE.rglob("*.py"):
        if path.name == "settings.py" or "stack" in path.parts:
            continue
        source = path.read_text()
        if "os.environ" in source or "os.getenv" in source:
            offenders.append(path.relative_to(SERVICE))
    assert not offenders, f"read the environment outside settings.py: {offenders}"
