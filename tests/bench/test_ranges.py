"""bench/ranges.py helpers: the windows asked for, members' extents in an archive, the
mapping of storage requests onto a window, /metrics and `zipedge index` output parsing,
and the table (no SeaweedFS, no service)."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import ranges  # noqa: E402
from bench.ceiling import FetchSummary  # noqa: E402
from bench.count_proxy import Request  # noqa: E402
from bench.ranges import Extent, Window  # noqa: E402
from bench.stream import BenchError  # noqa: E402

MiB = 1024 * 1024


def test_windows_and_their_headers() -> None:
    tail = ranges.tail_window(1000)
    assert (tail.start, tail.stop, len(tail)) == (900, 1000, 100)
    assert tail.header == "bytes=900-"  # open-ended, as a resuming client asks
    assert tail.content_range == "bytes 900-999/1000"
    size = 10 * MiB + 7
    mid = ranges.middle_window(size)
    assert len(mid) == MiB and mid.start == (size - MiB) // 2
    assert mid.header == f"bytes={mid.start}-{mid.start + MiB - 1}"
    assert ranges.middle_window(100).header == "bytes=0-"  # smaller than a MiB: all of it
    assert (mid.overlap(0, mid.start), mid.overlap(mid.start - 5, mid.start + 5)) == (0, 5)


class Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


@pytest.mark.parametrize("descriptors", [False, True])
def test_member_extents_point_at_each_members_bytes(tmp_path: Path, descriptors: bool) -> None:
    members = {
        "2025/01/01/a.bin": b"a" * 1000,
        "2025/01/01/é.bin": b"",
        "2025/01/02/c.bin": bytes(range(256)),
    }
    path = tmp_path / "x.zip"
    out = Unseekable() if descriptors else path.open("wb")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # type: ignore[arg-type]
        for name, data in members.items():
            zf.writestr(name, data)
    if isinstance(out, Unseekable):
        path.write_bytes(out.data)
    else:
        out.close()
    raw = path.read_bytes()
    extents = ranges.member_extents(path)
    assert set(extents) == set(members)
    for name, data in members.items():
        e = extents[name]
        assert raw[e.data_start : e.data_stop] == data
        assert e.descriptor is descriptors


def test_requested_span() -> None:
    assert ranges.requested_span(None, 100) == (0, 100)
    assert ranges.requested_span("bytes=5-9", 100) == (5, 10)
    assert ranges.requested_span("bytes=5-", 100) == (5, 100)
    assert ranges.requested_span("bytes=-3", 100) == (97, 100)
    assert ranges.requested_span("bytes=5-99999", 100) == (5, 100)
    with pytest.raises(BenchError):
        ranges.requested_span("items=1-2", 100)


EXTENTS = {
    "a.bin": Extent("a.bin", 100, 200, False),
    "b.bin": Extent("b.bin", 300, 400, False),
    "c.bin": Extent("c.bin", 500, 600, False),
    "2025/01/01/x y.bin": Extent("2025/01/01/x y.bin", 700, 800, False),
}


def test_requests_are_mapped_onto_the_window() -> None:
    window = Window("w", 350, 550, 900)
    requests = [
        Request("GET", "/bkt/pre/b.bin", "bytes=50-"),  # archive 350-400: inside
        Request("GET", "/bkt/pre/c.bin", None),  # 500-600: half outside, but needed
        Request("GET", "/bkt/pre/a.bin", None),  # 100-200: an object the window does not need
        Request("GET", "/bkt/pre/a.bin", "bytes=-10"),  # once more: counted as a GET, not an object
        Request("GET", "/bkt?list-type=2&prefix=pre%2F2025%2F01%2F01%2F", None),
        Request("HEAD", "/bkt/pre/b.bin", None),
        Request("GET", "/bkt/pre/warm-up.bin", None),
        Request("GET", "/bkt/pre/2025/01/01/x%20y.bin", "bytes=0-9"),  # percent-encoded key
    ]
    reads = ranges.count_reads(requests, bucket="bkt", prefix="pre", extents=EXTENTS, window=window)
    assert (reads.gets, reads.objects, reads.whole, reads.ranged) == (5, 4, 2, 3)
    assert reads.overlapping == 2  # b and c
    assert reads.outside == ["a.bin", "2025/01/01/x y.bin"]
    assert reads.bytes_requested == 50 + 100 + 100 + 10 + 10
    assert reads.bytes_outside == 0 + 50 + 100 + 10 + 10
    assert reads.lists == 1
    assert reads.other == {"HEAD another object": 1, "GET another object": 1}
    assert not reads.clean
    clean = ranges.count_reads(requests[:1], bucket="bkt", prefix="pre/", extents=EXTENTS, window=window)
    assert clean.clean and clean.objects == 1


def test_without_a_window_the_whole_archive_is_asked_for() -> None:
    requests = [Request("GET", f"/bkt/pre/{name}", None) for name in EXTENTS]
    reads = ranges.count_reads(requests, bucket="bkt", prefix="pre", extents=EXTENTS, window=None)
    assert (reads.gets, reads.overlapping, reads.bytes_outside) == (4, 4, 0) and reads.clean


def test_metric_value_sums_one_metrics_samples() -> None:
    text = "\n".join(
        [
            "# HELP zipedge_range_crc_reads_total Members read whole.",
            "# TYPE zipedge_range_crc_reads_total counter",
            "zipedge_range_crc_reads_total 181.0",
            "zipedge_range_crc_reads_created 1.7e9",
            'zipedge_streams_active{x="1"} 1.0',
            'zipedge_streams_active{x="2"} 2.0',
        ]
    )
    assert ranges.metric_value(text, "zipedge_range_crc_reads_total") == 181
    assert ranges.metric_value(text, "zipedge_streams_active") == 3
    assert ranges.metric_value(text, "zipedge_missing") == 0


INDEX_OUTPUT = """\
zipedge index: 2025-01-01: 40 objects so far, 0 already known, 40 learned (689 objects/s, 141 MB/s), 0 failed
zipedge index: 2025-01-02: 80 objects so far, 0 already known, 80 learned (547 objects/s, 112 MB/s), 0 failed
zipedge index: done: 80 CRCs learned, 0 already known, 0 failed, in 0.1 s
"""


def test_index_output_is_parsed() -> None:
    run = ranges.parse_index_output(INDEX_OUTPUT, ranges.IndexRun(32, wall_s=1.5))
    assert (run.learned, run.known, run.failed, run.reported_s) == (80, 0, 0, 0.1)
    assert run.objects_per_s == 547
    assert run.seconds == pytest.approx(80 / 547)  # finer than the done line's 0.1 s
    again = ranges.parse_index_output(
        "zipedge index: done: 0 CRCs learned, 80 already known, 0 failed, in 0.2 s\n", ranges.IndexRun(32)
    )
    assert (again.learned, again.known, again.seconds) == (0, 80, 0.2)
    with pytest.raises(BenchError, match="no done line"):
        ranges.parse_index_output("Traceback ...", ranges.IndexRun(32))


def _result(outside: list[str]) -> ranges.RangesResult:
    res = ranges.RangesResult("10 × 100 B", 10, 1000, default_concurrency=32)
    res.archives = {ranges.PRIMED: {"size": 2000, "etag": '"p"'}, ranges.COLD: {"size": 2160, "etag": '"c"'}}
    tail = ranges.tail_window(2000)
    res.ranges = {
        ranges.COLD: [ranges.RangeRun(ranges.tail_window(2160), 0.003, 0.2, 216, '"c"', 9)],
        ranges.PRIMED: [ranges.RangeRun(tail, 0.002, 0.02, 200, '"p"', 0)],
    }
    limit = FetchSummary("storage-limit", 16, 10, 1000, client="curl", runs_s=[0.01], cpu_s=[0.001])
    res.limits = [limit]
    res.index = {32: [ranges.IndexRun(32, 1.0, 0.1, 100.0, learned=10, bytes=1000, cpu_s=0.5)]}
    for state in (ranges.COLD, ranges.PRIMED, ranges.STREAMED):
        reads = ranges.Reads(gets=1, objects=1, whole=1, overlapping=1, outside=outside)
        res.counted.append(ranges.Counted(state, tail.label, reads, tail, '"p"'))
    return res


def test_the_table_and_the_checks() -> None:
    res = _result([])
    checks = ranges.checks(res)
    passed = [c.passed for c in checks if c.passed is not None]
    assert passed == [True, True]  # primed by zipedge index, primed by a stream
    text = ranges.render(res, checks)
    assert "PASS  no object outside the range is read with a primed index" in text
    assert "range 90%-end" in text and "zipedge index --concurrency 32 (default)" in text
    assert "0.10 x the storage limit" in text  # 1,000 B in 0.1 s against 1,000 B in 0.01 s
    json.dumps(res.as_dict())
    bad = _result(["x.bin"])
    assert [c.passed for c in ranges.checks(bad) if c.passed is not None] == [False, False]
    assert "FAIL" in ranges.render(bad, ranges.checks(bad))
