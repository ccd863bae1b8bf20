"""The ZIP layout: exact sizes, every reader accepts it, Zip64 only when needed."""

from __future__ import annotations

import os
import random
import subprocess
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pytest
import zipstream

from service.archive.layout import Layout, Member, dos_datetime
from service.writer import crc32
from tests.zipcheck import check_archive, sha256

MTIME = 1_736_000_000  # 2025-01-04T14:13:20Z

SIZES = {"empty": 0, "byte": 1, "kib": 1024, "mib": 1024 * 1024}


class Data(Protocol):
    """A member's content as `render` takes it: bytes, or zeros made only when sliced."""

    def __len__(self) -> int: ...

    def __getitem__(self, window: slice, /) -> bytes: ...


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


def render(
    layout: Layout, start: int, stop: int, datas: Sequence[Data], crcs: Sequence[int] | None = None
) -> bytes:
    """Archive bytes start..stop made from `pieces` alone, as a ranged answer is made."""
    if crcs is None:
        crcs = [zlib.crc32(d) for d in datas]  # type: ignore[arg-type]  # bytes when not given
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


class Zeros:
    """`size` zero bytes, made only for the slice asked (a 4 GiB member is never held)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, window: slice, /) -> bytes:
        start, stop, _ = window.indices(self.size)
        return bytes(max(stop - start, 0))


def zeros_crc(size: int) -> int:
    block = bytes(1 << 24)
    crc = 0
    for _ in range(size // len(block)):
        crc = crc32(block, crc)
    return crc32(bytes(size % len(block)), crc)


@pytest.mark.parametrize("known_crc", [False, True], ids=["descriptor", "crc-in-header"])
def test_zip64_windows_are_made_of_their_pieces(tmp_path: Path, known_crc: bool) -> None:
    """Every Zip64 record at once: a 4 GiB + 5 byte member of zeros (Zip64 extra in its local
    header, 24-byte descriptor, sizes in its central record), then 65,536 small members
    past 4 GiB (a Zip64 offset in each central record), so the directory's offset and the
    count need the Zip64 end record and locator. Windows across all of them, rendered
    from their pieces as a ranged answer is, are the bytes of the whole archive (written
    sparsely once); the archive itself opens in zipfile and bsdtar."""
    big = 2**32 + 5
    datas: list[Data] = [Zeros(big)] + [bytes([i % 251]) * (i % 4) for i in range(0x10000)]
    crcs = [zeros_crc(big)] + [zlib.crc32(d) for d in datas[1:]]  # type: ignore[arg-type]
    names = ["big.bin"] + [f"2025/01/05/P{i:05d}.jpg" for i in range(0x10000)]
    members = [
        Member(name, len(d), MTIME + i, crc if known_crc else None)
        for i, (name, d, crc) in enumerate(zip(names, datas, crcs, strict=True))
    ]
    layout = Layout(members)
    path = tmp_path / "zip64.zip"
    with path.open("wb") as out:
        out.write(layout.local_header(0))
        out.seek(big, os.SEEK_CUR)  # sparse: the zeros are never written
        out.write(layout.data_descriptor(0, crcs[0]))
        for index in range(1, len(members)):
            out.write(layout.local_header(index))
            out.write(datas[index][:])
            out.write(layout.data_descriptor(index, crcs[index]))
        assert out.tell() == layout.directory_offset
        for block in layout.central_directory(crcs):
            out.write(block)
        assert out.tell() == layout.size
    size = layout.size
    # The records this is about are really there.
    assert layout.directory_offset >= 2**32 and layout.offset(1) >= 2**32 and layout.end_size == 22 + 56 + 20
    fd = os.open(path, os.O_RDONLY)
    try:

        def whole(start: int, stop: int) -> bytes:
            return os.pread(fd, stop - start, start)

        end64 = size - 98
        assert whole(end64, end64 + 4) == b"PK\x06\x06" and whole(end64 + 56, end64 + 60) == b"PK\x06\x07"
        assert layout.local_header(0)[30 + 7 : 30 + 7 + 2] == b"\x01\x00"  # the Zip64 extra comes first
        tail = layout.data_offset(0) + big  # the big member's last byte, then its descriptor
        directory = layout.directory_offset
        windows = [(0, layout.data_offset(0) + 3), (30 + 7, 30 + 7 + 20), (tail - 4, layout.offset(1) + 40)]
        windows += [(tail, tail + 24), (tail + 5, tail + 30), (layout.offset(1), layout.data_offset(3))]
        windows += [(layout.offset(0x10000) - 7, directory + 5)]  # the last member into the directory
        windows += [(directory, directory + 120), (directory + 60, directory + 200)]  # big's record
        windows += [(end64 - 300, end64 + 1), (end64, size), (end64 + 50, end64 + 60), (size - 23, size)]
        windows += [(size - 1, size), (directory, size), (layout.offset(30_000) - 2, layout.offset(30_001))]
        rng = random.Random(11)
        for _ in range(300):  # most of them after the zeros, where the records are
            start = rng.randrange(tail - 1000, size) if rng.random() < 0.8 else rng.randrange(size)
            windows.append((start, min(size, start + rng.choice([1, 7, 64, 1000, 70_000]))))
        for start, stop in windows:
            assert render(layout, start, stop, datas, crcs) == whole(start, stop), (start, stop)
    finally:
        os.close(fd)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert len(infos) == len(members) and infos[0].file_size == big
        assert [i.header_offset for i in infos[:3]] == [layout.offset(i) for i in range(3)]
        for index in (1, 2, 3, 0x8000, 0xFFFF, 0x10000):  # through their local headers, CRC checked
            assert archive.read(names[index]) == datas[index][:]
    listed = subprocess.run(["bsdtar", "-tf", str(path)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == names


def test_a_window_in_the_directory_needs_only_its_members_crcs() -> None:
    members = [Member(f"m{i:04d}.bin", 10, MTIME) for i in range(1000)]
    layout = Layout(members)
    window = layout.pieces(layout.size - 200, layout.size)
    assert [p.kind for p in window] == ["directory"]
    needed = layout.directory_members(window[0].start, window[0].stop)
    assert 0 < len(needed) <= 4 and needed.stop == 1000  # the last few records, not all 1000
