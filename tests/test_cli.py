"""The `zipedge` command explains itself: a version, one line per command, and every
option of every command described with its default; its help names only this project's
own documents; `zipedge demo` writes the days the README's examples use."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from service import __version__
from service.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"serve", "worker", "demo", "stack"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def option_entries(help_text: str) -> dict[str, str]:
    """Each option's entry in a rendered help ("--port PORT  port to listen on ..."),
    continuation lines joined, keyed by its first option string."""
    entries: dict[str, str] = {}
    current = ""
    for line in help_text.split("options:", 1)[1].splitlines():
        if re.match(r"  -", line):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = ""
    return entries


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"zipedge {__version__}"


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^    {name} +\S", text, re.MULTILINE), f"{name} has no one-line help"
    assert COMMANDS <= subcommands().keys()


def test_help_refers_only_to_documents_in_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the wrapping
    documents = re.findall(r"[\w./-]+\.md\b", text)
    assert documents, "the help points at no documentation"
    assert [doc for doc in documents if not (ROOT / doc).is_file()] == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_described_with_its_default(name: str) -> None:
    command = subcommands()[name]
    entries = option_entries(command.format_help())
    options = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        assert action.help, f"zipedge {name} {action.option_strings[0]} has no description"
        entry = entries[action.option_strings[0]]
        assert "default" in entry, f"zipedge {name}: {entry!r} does not say its default"


def test_demo_writes_the_readme_days_and_prints_a_link_that_follows_redirects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--dir", str(tmp_path), "--days", "1", "--per-day", "1", "--url", "http://h:1/"])
    assert code == 0
    out = capsys.readouterr().out
    assert (tmp_path / "2025/01/05/MH12AB1234-083015.jpg").is_file()
    for day in range(1, 6):
        assert list((tmp_path / f"2025/01/0{day}").glob("*.jpg")), day
    assert "2025-01-01 .. 2025-01-05" in out
    assert re.search(r"curl -LOJ 'http://h:1/v1/zip\?from=\d{4}-\d\d-\d\d&to=\d{4}-\d\d-\d\d'", out), out


def test_demo_without_the_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path), "--days", "2", "--per-day", "1", "--no-examples"]) == 0
    assert not (tmp_path / "2025/01/05").exists()
