"""The ZIP layout: exact sizes, every reader accepts it, Zip64 only when needed."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import zipstream

from service.archive.layout import Layout, Member, dos_datetime
from tests.zipcheck import check_archive, sha256

MTIME = 1_736_000_000  # 2025-01-04T14:13:20Z

SIZES = {"empty": 0, "byte": 1, "kib": 1024, "mib": 1024 * 1024}


def build(members: list[Member], datas: list[bytes]) -> bytes:
    layout = Layout(members)
    out = bytearray()
    crcs = []
    for index, data in enumerate(datas):
        assert len(out) == layout.offset(index)
        out += layout.local_header(index)
        assert len(out) == layout.data_offset(index)
        out += data
        crc = zlib.crc32(data)
        crcs.append(crc)
        out += layout.data_descriptor(index, crc)
    for block in layout.central_directory(crcs):
        out += block
    assert len(out) == layout.size
    return bytes(out)


@pytest.mark.parametrize("known_crc", [False, True], ids=["descriptor", "crc-in-header"])
def test_round_trip_through_every_reader(tmp_path: Path, known_crc: bool) -> None:
    datas = {f"photos/{name}.bin": os.urandom(size) for name, size in SIZES.items()}
    datas["ünïcödé/名前.jpg"] = b"x" * 300
    members = [
        Member(name, len(data), MTIME + i, zlib.crc32(data) if known_crc else None)
        for i, (name, data) in enumerate(datas.items())
    ]
    path = tmp_path / "a.zip"
    path.write_bytes(build(members, list(datas.values())))
    check_archive(path, {name: sha256(data) for name, data in datas.items()})
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            assert bool(info.flag_bits & 0x08) is not known_crc
            assert info.external_attr >> 16 == 0o100644


def test_known_crc_archive_reads_from_local_headers_only(tmp_path: Path) -> None:
    """Streaming readers (bsdtar on a pipe) see only local headers: they must suffice."""
    datas = [os.urandom(n) for n in (0, 10, 70_000)]
    members = [Member(f"m{i}.bin", len(d), MTIME, zlib.crc32(d)) for i, d in enumerate(datas)]
    archive = build(members, datas)
    out = subprocess.run(["bsdtar", "-xOf", "-"], input=archive, capture_output=True, check=True)
    assert out.stdout == b"".join(datas)


@pytest.mark.parametrize("count", [1, 7, 300])
def test_size_matches_zipstream_ng(count: int) -> None:
    """zipstream-ng (the reference sized writer) must agree on the byte count, less the
    9-byte extended-timestamp extra we add to each local and central record."""
    names = [f"2025/01/0{i % 9 + 1}/PLATE{i:05d}-120000.jpg" for i in range(count)]
    sizes = [(i * 7919) % 250_000 for i in range(count)]
    stream = zipstream.ZipStream(sized=True)
    for name, size in zip(names, sizes, strict=True):
        stream.add(iter(()), name, size=size)
    layout = Layout([Member(n, s, MTIME) for n, s in zip(names, sizes, strict=True)])
    assert layout.size == len(stream) + 2 * 9 * count


def test_zip64_end_records_only_past_65535_entries(tmp_path: Path) -> None:
    small = Layout([Member(f"{i}", 0, MTIME) for i in range(0xFFFE)])
    big_members = [Member(f"{i}", 0, MTIME) for i in range(0xFFFF + 1)]
    big = Layout(big_members)
    assert small.end_size == 22
    assert big.end_size == 22 + 56 + 20
    path = tmp_path / "many.zip"
    path.write_bytes(build(big_members, [b""] * len(big_members)))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == 0xFFFF + 1
    check_tools = subprocess.run(["unzip", "-t", "-qq", str(path)], capture_output=True, text=True)
    assert check_tools.returncode == 0, check_tools.stdout
    seven = subprocess.run(["7z", "t", str(path)], capture_output=True, text=True)
    assert "Everything is Ok" in seven.stdout


@pytest.mark.parametrize("known_crc", [False, True], ids=["descriptor", "crc-in-header"])
def test_member_over_4_gib_uses_zip64(tmp_path: Path, known_crc: bool) -> None:
    """A > 4 GiB member of zeros written sparsely: Zip64 in its local header, descriptor
    and central record; the small member after it needs a Zip64 offset."""
    size = 2**32 + 5
    zero = bytes(1 << 20)
    crc = 0
    for _ in range(size // len(zero)):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(bytes(size % len(zero)), crc)
    tail = b"after the big one"
    members = [
        Member("big.bin", size, MTIME, crc if known_crc else None),
        Member("tail.txt", len(tail), MTIME, zlib.crc32(tail) if known_crc else None),
    ]
    layout = Layout(members)
    path = tmp_path / "big.zip"
    with path.open("wb") as out:
        out.write(layout.local_header(0))
        out.seek(size, os.SEEK_CUR)  # sparse: the zeros are never written
        out.write(layout.data_descriptor(0, crc))
        assert out.tell() == layout.offset(1)
        out.write(layout.local_header(1) + tail + layout.data_descriptor(1, zlib.crc32(tail)))
        for block in layout.central_directory([crc, zlib.crc32(tail)]):
            out.write(block)
        assert out.tell() == layout.size
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert [i.file_size for i in infos] == [size, len(tail)]
        assert archive.read("tail.txt") == tail
    for command in (["unzip", "-t", "-qq", str(path)], ["7z", "t", str(path)], ["bsdtar", "-tf", str(path)]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def test_timestamps_are_utc_and_deterministic(tmp_path: Path) -> None:
    members = [Member("a", 0, MTIME), Member("old", 0, 0), Member("future", 0, 2**33)]
    first = build(members, [b"", b"", b""])
    assert first == build(members, [b"", b"", b""])
    path = tmp_path / "t.zip"
    path.write_bytes(first)
    with zipfile.ZipFile(path) as archive:
        times = [info.date_time for info in archive.infolist()]
    assert times[0] == time.gmtime(MTIME)[:6]
    assert times[1] == (1980, 1, 1, 0, 0, 0)
    assert times[2] == (2107, 12, 31, 23, 59, 58)
    assert dos_datetime(-5) == dos_datetime(0)


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        Layout([Member("x", -1, MTIME)])


def test_central_directory_needs_one_crc_per_member() -> None:
    with pytest.raises(ValueError):
        list(Layout([Member("x", 0, MTIME)]).central_directory([]))


def render(layout: Layout, start: int, stop: int, datas: list[bytes]) -> bytes:
    """Archive bytes start..stop made from `pieces` alone, as a ranged answer is made."""
    crcs = [zlib.crc32(d) for d in datas]
    out = bytearray()
    for piece in layout.pieces(start, stop):
        if piece.kind == "header":
            out += layout.local_header(piece.index)[piece.start : piece.stop]
        elif piece.kind == "data":
            out += datas[piece.index][piece.start : piece.stop]
        elif piece.kind == "descriptor":
            out += layout.data_descriptor(piece.index, crcs[piece.index])[piece.start : piece.stop]
        else:
            asked: list[int] = []

            def crc_of(i: int, asked: list[int] = asked) -> int:
                asked.append(i)
                return crcs[i]

            out += layout.directory_slice(piece.start, piece.stop, crc_of)
            assert set(asked) == set(layout.directory_members(piece.start, piece.stop))
    return bytes(out)


@pytest.mark.parametrize("known_crc", [False, True], ids=["descriptor", "crc-in-header"])
def test_any_window_is_made_of_its_pieces(known_crc: bool) -> None:
    import random

    rng = random.Random(7)
    datas = [os.urandom(rng.choice([0, 1, 17, 300, 5000])) for _ in range(40)]
    members = [
        Member(f"2025/01/05/P{i:03d}.jpg", len(d), MTIME, zlib.crc32(d) if known_crc else None)
        for i, d in enumerate(datas)
    ]
    layout = Layout(members)
    whole = build(members, datas)
    size = len(whole)
    windows = [(0, 1), (size - 1, size), (0, size), (layout.directory_offset, size)]
    windows += [(layout.offset(i) + 3, layout.data_offset(i) + 1) for i in (0, 5, 39)]  # in a header
    windows += [(layout.directory_offset + 10, layout.directory_offset + 500), (size - 30, size - 5)]
    windows += [tuple(sorted(rng.sample(range(size + 1), 2))) for _ in range(300)]  # type: ignore[misc]
    for start, stop in windows:
        assert render(layout, start, stop, datas) == whole[start:stop], (start, stop)


def test_a_window_in_the_directory_needs_only_its_members_crcs() -> None:
    members = [Member(f"m{i:04d}.bin", 10, MTIME) for i in range(1000)]
    layout = Layout(members)
    window = layout.pieces(layout.size - 200, layout.size)
    assert [p.kind for p in window] == ["directory"]
    needed = layout.directory_members(window[0].start, window[0].stop)
    assert 0 < len(needed) <= 4 and needed.stop == 1000  # the last few records, not all 1000
