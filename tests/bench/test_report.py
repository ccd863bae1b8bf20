"""bench/report.py on made-up figures: the storage-limit ratio, CPU per object, the target
lines and results.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ceiling import FetchSummary  # noqa: E402
from bench.report import Row, checks, render, write_json  # noqa: E402
from bench.stream import StreamRun, StreamSummary  # noqa: E402

KiB = 1024
N = 1000
OBJECT_BYTES = N * 200 * KiB
ARCHIVE_BYTES = OBJECT_BYTES + N * 150


def _limit(parallel: int, seconds: float) -> FetchSummary:
    s = FetchSummary("storage-limit", parallel, N, OBJECT_BYTES, client="curl")
    s.runs_s = [seconds, seconds + 0.1, seconds - 0.01]
    s.cpu_s = [0.05, 0.06, 0.07]
    s.cpu_system_s = [0.04, 0.04, 0.05]
    s.server_cpu_s = [{"seaweedfs": 0.3}, {"seaweedfs": 0.4}, {"seaweedfs": 0.5}]
    s.connections = [parallel] * 3
    return s


def _stream(seconds: float, service_cpu_s: float) -> StreamSummary:
    runs = [
        StreamRun(
            received=ARCHIVE_BYTES,
            content_length=ARCHIVE_BYTES,
            total_s=seconds,
            service_cpu_s=service_cpu_s,
            cpu_s={"service": service_cpu_s, "seaweedfs": 0.45},
            cpu_system_s={"service": service_cpu_s / 2, "seaweedfs": 0.2},
            client_cpu_s=0.1,
        )
        for _ in range(3)
    ]
    return StreamSummary(runs, etag='"x"')


def _row(setting: str, seconds: float, service_cpu_s: float) -> Row:
    row = Row(setting, setting != "loopback", "small", "1000 × 200 KiB", N, OBJECT_BYTES)
    row.limits = [_limit(16, 0.50), _limit(32, 0.40), _limit(64, 0.45)]
    python = FetchSummary("concurrent", 32, N, OBJECT_BYTES)
    python.runs_s, python.cpu_s = [1.0], [1.1]
    row.python_client = [python]
    row.baseline = FetchSummary("sequential", 1, N, OBJECT_BYTES, runs_s=[4.0], cpu_s=[1.2])
    row.stream = _stream(seconds, service_cpu_s)
    return row


def test_ratio_and_cpu_per_object() -> None:
    row = _row("loopback", 0.42, 0.25)
    assert row.limit is row.limits[1]  # best median MB/s: N=32
    assert row.limit.mb_per_s == pytest.approx(OBJECT_BYTES / 0.40 / 1e6)
    assert row.ratio_limit == pytest.approx((ARCHIVE_BYTES / 0.42) / (OBJECT_BYTES / 0.40))
    assert row.service_ms_per_object == pytest.approx(0.25)
    assert row.stream_ms_per_object("service", system=True) == pytest.approx(0.125)
    assert row.stream_ms_per_object("seaweedfs") == pytest.approx(0.45)
    assert row.stream_ms_per_object("proxy") is None
    assert row.limit.cpu_ms_per_object == pytest.approx(0.06)
    assert row.limit.server_ms_per_object("seaweedfs") == pytest.approx(0.4)


def test_target_lines() -> None:
    good, slow = _row("loopback", 0.42, 0.25), _row("rtt20ms", 0.9, 0.35)
    got = {(c.what, c.where): c.passed for c in checks([good, slow], None, 32 * 1024 * 1024)}
    assert got[("zipedge >= 0.9 x storage limit at loopback (1,000 x 200 KiB)", "")] is True
    assert got[("service CPU <= 0.3 ms per 200 KiB object", "loopback/small")] is True
    assert got[("service CPU <= 0.3 ms per 200 KiB object", "rtt20ms/small")] is False
    assert got[("x storage limit", "rtt20ms/small")] is None  # judged at loopback only

    text = render([good, slow], None, checks([good, slow], None, 32 * 1024 * 1024), [])
    header = text.splitlines()[0]
    assert "x storage limit" in header and "service CPU ms/object" in header
    assert "PASS  zipedge >= 0.9 x storage limit at loopback (1,000 x 200 KiB)" in text
    assert "FAIL  service CPU <= 0.3 ms per 200 KiB object [rtt20ms/small]" in text
    for what in ("storage limit: curl --parallel", "python client, no ZIP (aioboto3)", "sequential"):
        assert what in text
    assert " 32* " in text  # the best storage-limit level is marked


def test_too_slow_fails_without_breaking_anything() -> None:
    row = _row("loopback", 0.60, 0.25)
    (limit_check,) = [c for c in checks([row], None, 0) if "storage limit" in c.what]
    assert limit_check.passed is False


def test_results_json_has_every_new_figure(tmp_path: Path) -> None:
    row = _row("loopback", 0.42, 0.25)
    out = tmp_path / "results.json"
    write_json(out, {"meta": 1}, [row], None, checks([row], None, 0))
    doc = json.loads(out.read_text())
    r = doc["rows"][0]
    assert r["ratio_to_storage_limit"] == pytest.approx(row.ratio_limit)
    assert r["service_cpu_ms_per_object"] == pytest.approx(0.25)
    assert r["seaweedfs_cpu_ms_per_object"] == pytest.approx(0.45)
    assert r["storage_limit_curl_cpu_ms_per_object"] == pytest.approx(0.06)
    assert [s["concurrency"] for s in r["storage_limit_by_parallel"]] == [16, 32, 64]
    assert r["storage_limit_best"]["concurrency"] == 32
    assert r["storage_limit_best"]["connections"] == [32, 32, 32]
    assert r["python_client_best"]["client"] == "aioboto3"
    assert r["zipedge"]["runs"][0]["cpu_s"] == {"service": 0.25, "seaweedfs": 0.45}
    assert any(t["target"].startswith("zipedge >= 0.9 x storage limit") for t in doc["targets"])


def test_the_folder_job_is_the_median_of_its_runs_against_the_stream() -> None:
    from bench.jobs import JobsResult, JobTiming
    from bench.report import jobs_checks

    res = JobsResult("5000 × 200 KiB", 5000, OBJECT_BYTES)
    res.stream = StreamSummary([StreamRun(received=ARCHIVE_BYTES, total_s=s) for s in (2.0, 2.5, 3.0)])
    for seconds, workers in ((3.4, 2.1), (2.9, 1.8), (3.1, 1.9)):
        res.folder_runs.append((JobTiming("j", "range", seconds=seconds), {"workers": workers}))
    assert res.folder is not None and res.folder.seconds == 3.1
    assert res.folder_cpu_s == {"workers": 1.9}
    [check] = [c for c in jobs_checks(res) if "folder" in c.where]
    assert check.passed is True  # 3.1 / 2.5 = 1.24
    assert "1.24x" in check.measured and "median of 3.40 / 2.90 / 3.10 s" in check.measured
    assert res.as_dict()["folder_job_runs_s"] == [3.4, 2.9, 3.1]

    res.big, res.big_cpu_s = JobTiming("j", "range", seconds=8.3), {"workers": 2.0, "seaweedfs": 13.0}
    [floor] = [c for c in jobs_checks(res) if "CPU floor" in c.what]
    cores = os.cpu_count() or 1
    assert f"= {15.0 / cores:.2f} s" in floor.measured and "SeaweedFS 13.0 of 15.0" in floor.measured


def test_the_cpu_budget_of_the_shared_cores() -> None:
    """limit: curl 0.06 + SeaweedFS 0.4 ms per object; zipedge: service 0.25 + SeaweedFS
    0.45 + receiving curl 0.1; a zipper as lean as curl: 0.06 + 0.45 + 0.1."""
    row = _row("loopback", 0.42, 0.25)
    assert row.receiver_ms_per_object == pytest.approx(0.1)
    budget = row.cpu_budget()
    assert budget is not None
    assert budget == pytest.approx((0.46, 0.80, 0.46 / 0.61))
    [check] = [c for c in checks([row], None, 0) if c.what == "CPU budget of the shared cores"]
    assert check.passed is None and "predicts 0.58" in check.measured and "curl costs: 0.75" in check.measured
    assert not [c for c in checks([_row("rtt20ms", 0.9, 0.35)], None, 0) if "budget" in c.what]
