"""bench/cpu.py: a process's own CPU between two samples, children excluded.

The child burns a fixed amount of its own CPU time (process_time, not wall time), so the
figures hold on a loaded machine too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cpu import CpuMeter, ms_per_object  # noqa: E402

BURN_S = 0.3

# Waits for a line, burns BURN_S of its own CPU, then has a grandchild burn as much (reaped,
# so it lands in the child's children_* times), says "done" and waits for stdin to close.
CHILD = f"""
import subprocess, sys, time

def burn(seconds):
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        pass

print("ready", flush=True)
sys.stdin.readline()
burn({BURN_S})
subprocess.run([sys.executable, "-c", "import time\\nt0 = time.process_time()\\n"
                "while time.process_time() - t0 < {BURN_S}: pass"], check=True)
print("done", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        try:
            yield proc
        finally:
            proc.kill()


def test_meter_counts_the_process_itself_not_its_children(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None and child.stdout is not None
    meter = CpuMeter({"child": child.pid, "absent": None})
    assert meter.names == ["child"]
    meter.start()
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "done"
    got = meter.stop()
    assert set(got) == {"child"}
    # Its own burn plus spawning the grandchild; the grandchild's burn (also BURN_S) is not in it.
    assert BURN_S - 0.05 <= got["child"] < BURN_S * 2 - 0.1
    assert 0.0 <= meter.system["child"] <= got["child"]


def test_meter_drops_a_process_that_is_gone(child: subprocess.Popen[str]) -> None:
    meter = CpuMeter({"child": child.pid})
    meter.start()
    child.kill()
    child.wait()
    assert meter.stop() == {}


def test_ms_per_object() -> None:
    assert ms_per_object(0.25, 1000) == pytest.approx(0.25)
    assert ms_per_object(None, 1000) is None
    assert ms_per_object(1.0, 0) is None
