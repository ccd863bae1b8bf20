"""bench/load.py and bench/soak.py without servers: their options and defaults, the load's
ranges and curl write-out, the soak's checks and tables on made-up figures, and the docs
naming every part."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load, soak  # noqa: E402
from bench.__main__ import PARTS, parse_args  # noqa: E402
from bench.dataset import standard_datasets  # noqa: E402

MiB = 1024 * 1024


def test_every_run_includes_load_and_soak_with_their_default_sizes() -> None:
    full, quick = parse_args([]), parse_args(["--quick"])
    assert {"load", "soak"} <= set(full.only) == set(PARTS)
    assert (full.soak_seconds, quick.soak_seconds) == (60.0, 20.0)
    assert full.load_streams == 100
    assert full.load_workers == [1, 2]
    assert parse_args(["--only", "soak", "--soak-seconds", "600"]).soak_seconds == 600.0


@pytest.mark.parametrize(
    "argv",
    [["--load-workers", "0"], ["--load-streams", "0"], ["--soak-seconds", "0"], ["--soak-clients", "0"]],
)
def test_nonsense_sizes_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_help_describes_load_and_soak(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for needle in ("--load-streams", "--soak-seconds", "* load:", "* soak:", "600 for the real soak"):
        assert needle in text


def test_docs_list_every_part() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for part in PARTS:
        assert f"| `{part}` |" in text, part
    assert "python -m bench --only load" in text
    assert "python -m bench --only soak --soak-seconds 600" in text


@pytest.mark.parametrize("quick", [True, False])
def test_load_ranges_are_all_different_or_all_the_same(quick: bool) -> None:
    ds = standard_datasets(quick)["load"]
    different = load.ranges(ds, 100, "different")
    assert len(set(different)) == 100
    assert set(load.ranges(ds, 100, "same")) == {different[0]}
    for first, last in different:
        objects = load.objects_of(ds, first, last)
        assert len({o.name[:10] for o in objects}) == load.RANGE_DAYS
        assert len(objects) == load.RANGE_DAYS * ds.count // 104


def test_load_write_out_lines() -> None:
    text = "1 0 200 0.5 1.5 1000 1000\n0 18 200 0.4 1.0 10 1000\n2 7 0 0 0 0 \n"
    transfers = {t.index: t for t in load.parse_transfers(text)}
    assert transfers[1].complete
    assert not transfers[0].complete  # cut short
    assert not transfers[2].complete and transfers[2].content_length is None  # never connected


def test_load_batch_figures() -> None:
    b = load.Batch(
        "different", 2, 4, seconds=2.0, bytes_total=400_000_000, limit_s=1.0, limit_bytes=500_000_000
    )
    b.transfers = [load.Transfer(i, 0, 200, 0.1 * (i + 1), 1.0, 1, 1) for i in range(4)]
    b.rss_baseline, b.rss_peak = 100 * MiB, 108 * MiB
    assert b.mb_per_s == 200.0 and b.ratio == pytest.approx(0.4)
    assert b.ttfb(0.5) == pytest.approx(0.3) and b.ttfb(0.99) == pytest.approx(0.4)
    assert b.rss_per_stream == 2 * MiB
    res = load.LoadResult("4 streams", [b])
    text = load.render(res, load.checks(res))
    assert "different" in text and "PASS" in text and not res.errors


def _soak(rss_mib: list[int], tasks_after: int = 8) -> soak.SoakResult:
    res = soak.SoakResult(30.0, 2, 8, counts=Counter({"stream 200": 5, "range 206": 3, "range restarted": 1}))
    res.samples = [
        soak.Sample(float(i), r * MiB, 190, 80 * MiB, 12 * MiB, 10, 1.0) for i, r in enumerate(rss_mib)
    ]
    res.idle_before, res.idle_after = (175, 10), (180, tasks_after)
    return res


def test_soak_checks() -> None:
    flat = {c.what: c for c in soak.checks(_soak([250] * 8))}
    assert flat["soak errors == 0"].passed
    assert flat["service RSS flat after warm-up"].passed
    assert flat["asyncio tasks back to idle after the soak"].passed

    growing = {c.what: c for c in soak.checks(_soak([200, 210, 220, 230, 240, 250, 260, 300], 12))}
    assert not growing["service RSS flat after warm-up"].passed
    assert not growing["asyncio tasks back to idle after the soak"].passed


def test_soak_table() -> None:
    res = _soak([250] * 8)
    res.errors.append("range: something")
    text = soak.render(res, soak.checks(res))
    assert "restarted 1" in text and "ERROR range: something" in text and "FAIL" in text
    assert res.as_dict()["requests"] == 9
