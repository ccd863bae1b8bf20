"""Architecture rules, enforced: the pure core imports only what it is allowed to and opens
no files; the web layer sees no concrete adapter; only the settings read the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parent.parent / "service"
PURE = [*sorted((SERVICE / "archive").glob("*.py")), SERVICE / "sigv4.py"]

#: Everything the pure core may import: computation only, no IO, no concurrency, no clock
#: beyond reading it (`time`), nothing third-party.
PURE_STDLIB = {
    "__future__",
    "base64",
    "binascii",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "json",
    "math",
    "re",
    "string",
    "struct",
    "time",
    "typing",
    "unicodedata",
    "urllib.parse",
}
PURE_PROJECT = {"service.archive", "service.constants", "service.exceptions"}

#: Calls that touch the outside world, by name.
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def imported(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(SERVICE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def _allowed(name: str) -> bool:
    if name.split(".")[0] == "service":
        return any(name == p or name.startswith(p + ".") for p in PURE_PROJECT)
    return name in PURE_STDLIB


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_the_pure_core_imports_only_what_it_may(path: Path) -> None:
    offenders = sorted(name for name in imported(path) if not _allowed(name))
    assert not offenders, f"{path.name} imports {offenders}"


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_the_pure_core_opens_nothing(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"


def test_the_rule_itself_catches_io() -> None:
    assert not _allowed("os") and not _allowed("pathlib") and not _allowed("asyncio")
    assert not _allowed("service.sources.s3") and not _allowed("httpx")
    assert _allowed("service.archive.names") and _allowed("hashlib")


def test_the_pure_core_exists() -> None:
    assert {p.name for p in PURE} >= {"layout.py", "manifest.py", "names.py", "selection.py", "sigv4.py"}


#: Adapters: modules that talk to one external system. The web layer reaches them only
#: through the interfaces the runtime wires up.
ADAPTERS = (
    "service.sources.",
    "service.cache.s3",
    "service.cache.folder",
    "service.cache.memory",
    "service.s3",
)

#: What adapters implement: fine to import anywhere.
INTERFACES = {"service.sources.base", "service.cache.base"}


def test_web_imports_no_concrete_adapter() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in (SERVICE / "web").glob("*.py")
        for name in imported(path)
        if name.startswith(ADAPTERS) and name not in INTERFACES
    }
    assert not offenders, offenders


def test_no_import_cycle_between_cli_and_stack() -> None:
    for path in (SERVICE / "stack").glob("*.py"):
        assert "service.cli" not in imported(path), f"{path.name} imports the CLI"


def test_no_module_grows_past_one_concept() -> None:
    """About 400 lines at most: a module past that holds more than one concept."""
    # constants.py is the one table of every number, on purpose (one place to look).
    long = {
        str(p.relative_to(SERVICE)): n
        for p in SERVICE.rglob("*.py")
        if p.name != "constants.py" and (n := len(p.read_text().splitlines())) > 420
    }
    assert not long, long


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in SERVICE.rglob("*.py"):
        if path.name == "settings.py" or "stack" in path.parts:
            continue
        source = path.read_text()
        if "os.environ" in source or "os.getenv" in source:
            offenders.append(path.relative_to(SERVICE))
    assert not offenders, f"read the environment outside settings.py: {offenders}"
