"""bench/profile.py's pieces: py-spy attached to a running Python process for as long as a
context is open, and the cProfile summary. No service, no SeaweedFS."""

from __future__ import annotations

import asyncio
import cProfile
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import profile  # noqa: E402

BUSY = """
import sys
def spin_here():
    while True:
        sum(range(1000))
print("ready", flush=True)
spin_here()
"""


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        try:
            yield proc
        finally:
            proc.kill()


async def test_py_spy_records_while_the_context_is_open(busy: subprocess.Popen[str], tmp_path: Path) -> None:
    why_not = await profile.py_spy_unavailable(busy.pid)
    if why_not is not None:
        pytest.skip(why_not)  # e.g. ptrace refused: the bench falls back to cProfile
    out = tmp_path / "p.svg"
    async with profile.PySpy(busy.pid, out, "flamegraph", tmp_path / "py-spy.log") as spy:
        await asyncio.sleep(0.5)
    assert "Wrote flamegraph" in spy.summary
    assert "spin_here" in out.read_text()


async def test_py_spy_unavailable_says_why() -> None:
    why_not = await profile.py_spy_unavailable(2**22 + 12345)  # no such pid
    assert why_not is not None
    assert "failed" in why_not or "not installed" in why_not


def _work() -> int:
    return sum(i * i for i in range(20000))


def test_top_functions(tmp_path: Path) -> None:
    prof = cProfile.Profile()
    prof.runcall(_work)
    path = tmp_path / "p.pstats"
    prof.dump_stats(path)
    text = profile.top_functions(path, limit=5)
    assert "_work" in text and "internal time" in text and "cumulative time" in text
