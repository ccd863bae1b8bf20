"""The documentation and the code speak of the project only: no numbered issues of a
tracker the reader cannot see, no documents that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What is read: the README, the docs, the deployment kit, the code and the benchmark.
SCANNED = ("README.md", "docs", "nginx", "edge", "deploy", "service", "bench")

FORBIDDEN = {
    "a numbered issue": re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
    "DESIGN.md": re.compile(r"DESIGN\.md\b", re.IGNORECASE),
    "../shared": re.compile(r"\.\./shared\b"),
}


def scanned_files() -> list[Path]:
    """Every text file there (a binary one could not say anything anyway)."""
    found: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            parts = candidate.relative_to(ROOT).parts
            if "__pycache__" in parts:
                continue
            try:
                candidate.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            found.append(candidate)
    return found


def test_the_scan_reads_every_kind_of_file() -> None:
    """The scan must not come back empty-handed because a folder moved."""
    files = scanned_files()
    relative = {p.relative_to(ROOT).as_posix() for p in files}
    assert "README.md" in relative and "docs/api.md" in relative
    for folder in SCANNED[1:]:
        assert any(name.startswith(f"{folder}/") for name in relative), folder
    assert {".py", ".js", ".html", ".md", ".template", ".yml"} <= {p.suffix for p in files}


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_nothing_names_what_lives_outside_the_repository(what: str) -> None:
    pattern = FORBIDDEN[what]
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in scanned_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"{what}:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "line",
    ["see issue 12", "Issue #7 says", "(issues #3)", "as DESIGN.md puts it", "../shared/notes.md"],
)
def test_the_patterns_catch_what_they_are_for(line: str) -> None:
    assert any(pattern.search(line) for pattern in FORBIDDEN.values())


@pytest.mark.parametrize("line", ["an issue with 2 hosts", "tissue 3", "../shared_dir", "design.mdx"])
def test_the_patterns_leave_ordinary_words_alone(line: str) -> None:
    assert not any(pattern.search(line) for pattern in FORBIDDEN.values())
