"""The byte layout of a stored ZIP archive, computed before a single byte is fetched.

Pure: given members (name, size, mtime, optional CRC-32) it knows every offset and the
exact total size, and produces the records that surround the data: local headers, data
descriptors, the central directory and the end records. The writer only has to put each
member's bytes between its header and its descriptor.

Format policy (docs/zip-format.md):
- stored (method 0) only; photos do not compress;
- UTF-8 name flag (bit 11) always;
- Zip64 only where a value does not fit: per member when its size does not fit 32 bits,
  per central record when its offset does not, and the Zip64 end records when the
  count, directory size or directory offset do not. The Zip64 extra is the first extra
  field (Windows 7 needs that);
- a member whose CRC-32 is known in advance gets CRC and sizes in its local header and no
  data descriptor (the form streaming readers and macOS like best); the others get
  flag bit 3 and a data descriptor with signature;
- deterministic: the timestamp is the object's mtime (UTC) as a DOS date plus an
  extended-timestamp extra (0x5455) so readers show the true UTC time; permissions 0644.

zipstream-ng, the library this mirrors, takes no per-member timestamp (it stamps the
wall clock) and always writes data descriptors, hence this module.
"""

from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from service.constants import (
    DOS_EPOCH_YEAR,
    DOS_LAST_YEAR,
    ZIP16_LIMIT,
    ZIP32_LIMIT,
    ZIP_DIRECTORY_BLOCK_BYTES,
)

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_DESCRIPTOR32 = struct.Struct("<IIII")  # signature, crc, compressed, uncompressed
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_END = struct.Struct("<IHHHHIIH")  # 22 bytes
_END64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes
_EXTENDED_TIME = struct.Struct("<HHBi")  # 9 bytes: id, length 5, flags (mtime), mtime

_SIG_LOCAL = 0x04034B50
_SIG_CENTRAL = 0x02014B50
_SIG_DESCRIPTOR = 0x08074B50
_SIG_END = 0x06054B50
_SIG_END64 = 0x06064B50
_SIG_LOCATOR64 = 0x07064B50

_EXTRA_ZIP64 = 0x0001
_EXTRA_TIME = 0x5455

_FLAG_DESCRIPTOR = 1 << 3
_FLAG_UTF8 = 1 << 11
_VERSION_DEFAULT = 20  # 2.0: stored, data descriptors
_VERSION_ZIP64 = 45  # 4.5: Zip64 extensions
_MADE_BY_UNIX = 3 << 8
_REGULAR_FILE_0644 = (0o100644 << 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Member:
    """What the layout needs of one member. `mtime` is seconds since the epoch, UTC."""

    name: str
    size: int
    mtime: int
    crc32: int | None = None


def dos_datetime(mtime: int) -> tuple[int, int]:
    """(date, time) in MS-DOS format for a UTC instant, clamped to what DOS can hold."""
    if mtime < 0:
        mtime = 0
    t = time.gmtime(mtime)
    if t.tm_year < DOS_EPOCH_YEAR:
        year, month, day, hour, minute, second = DOS_EPOCH_YEAR, 1, 1, 0, 0, 0
    elif t.tm_year > DOS_LAST_YEAR:
        year, month, day, hour, minute, second = DOS_LAST_YEAR, 12, 31, 23, 59, 58
    else:
        year, month, day = t.tm_year, t.tm_mon, t.tm_mday
        hour, minute, second = t.tm_hour, t.tm_min, min(t.tm_sec, 59)
    date = (year - DOS_EPOCH_YEAR) << 9 | month << 5 | day
    clock = hour << 11 | minute << 5 | second // 2
    return date, clock


def _extended_time(mtime: int) -> bytes:
    # The field is a signed 32-bit count; outside it, readers fall back to the DOS date.
    if 0 <= mtime < 2**31:
        return _EXTENDED_TIME.pack(_EXTRA_TIME, 5, 1, mtime)
    return b""


#: What a stretch of archive bytes is: a member's local header, data or data descriptor,
#: or the central directory with the end records.
PieceKind = Literal["header", "data", "descriptor", "directory"]


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes `start` to `stop` (exclusive) of one record or member's data, relative to
    that record's (or the data's, or the directory's) own first byte. `index` is the
    member (-1 for the directory)."""

    kind: PieceKind
    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class _Placed:
    """A member with its encoded name and its position in the archive."""

    member: Member
    name: bytes
    offset: int
    zip64: bool  # size needs 64 bits: Zip64 extra in the local header, 24-byte descriptor
    header_size: int
    descriptor_size: int


class Layout:
    """Offsets and sizes of every record of one archive; `size` is the exact byte count."""

    def __init__(self, members: Sequence[Member]) -> None:
        placed: list[_Placed] = []
        offset = 0
        for member in members:
            if member.size < 0:
                raise ValueError(f"negative size for {member.name!r}")
            name = member.name.encode("utf-8")
            zip64 = member.size >= ZIP32_LIMIT
            header = _LOCAL.size + len(name) + (20 if zip64 else 0) + len(_extended_time(member.mtime))
            descriptor = 0
            if member.crc32 is None:
                descriptor = _DESCRIPTOR64.size if zip64 else _DESCRIPTOR32.size
            placed.append(_Placed(member, name, offset, zip64, header, descriptor))
            offset += header + member.size + descriptor
        self._placed = placed
        self._starts = [p.offset for p in placed]
        self.directory_offset = offset
        #: where each member's central record starts, relative to the directory
        self._central_starts: list[int] = []
        position = 0
        for p in placed:
            self._central_starts.append(position)
            position += self._central_size(p)
        self.directory_size = position
        self.end_size = _END.size + (_END64.size + _LOCATOR64.size if self._needs_end64() else 0)
        self.size = self.directory_offset + self.directory_size + self.end_size

    def __len__(self) -> int:
        return len(self._placed)

    def offset(self, index: int) -> int:
        """Where member `index`'s local header starts."""
        return self._placed[index].offset

    def data_offset(self, index: int) -> int:
        """Where member `index`'s data starts."""
        placed = self._placed[index]
        return placed.offset + placed.header_size

    def has_crc_in_header(self, index: int) -> bool:
        return self._placed[index].member.crc32 is not None

    # -- byte windows ---------------------------------------------------------------------

    def pieces(self, start: int, stop: int) -> list[Piece]:
        """What archive bytes `start` to `stop` (exclusive) are made of, in order."""
        if not 0 <= start <= stop <= self.size:
            raise ValueError(f"window {start}-{stop} outside an archive of {self.size} bytes")
        found: list[Piece] = []
        first = max(bisect.bisect_right(self._starts, start) - 1, 0)
        for index in range(first, len(self._placed)):
            p = self._placed[index]
            if p.offset >= stop:
                break
            data = p.offset + p.header_size
            end = data + p.member.size
            spans: tuple[tuple[PieceKind, int, int], ...] = (
                ("header", p.offset, data),
                ("data", data, end),
                ("descriptor", end, end + p.descriptor_size),
            )
            for kind, lo, hi in spans:
                a, b = max(lo, start), min(hi, stop)
                if a < b:
                    found.append(Piece(kind, index, a - lo, b - lo))
        a, b = max(self.directory_offset, start), min(self.size, stop)
        if a < b:
            found.append(Piece("directory", -1, a - self.directory_offset, b - self.directory_offset))
        return found

    def directory_members(self, start: int, stop: int) -> range:
        """The members whose central records hold bytes `start` to `stop` of the directory
        (relative to its first byte)."""
        if start >= min(stop, self.directory_size):
            return range(0)
        first = bisect.bisect_right(self._central_starts, start) - 1
        last = bisect.bisect_left(self._central_starts, min(stop, self.directory_size))
        return range(max(first, 0), last)

    def directory_slice(self, start: int, stop: int, crc_of: Callable[[int], int]) -> bytes:
        """Bytes `start` to `stop` of the central directory and end records (relative to
        the directory's first byte); `crc_of(i)` is asked only for the members whose
        records fall in the window."""
        members = self.directory_members(start, stop)
        base = self._central_starts[members.start] if members else self.directory_size
        parts = [self._central_record(self._placed[i], crc_of(i)) for i in members]
        if stop > self.directory_size:
            parts.append(self._end_records())
        blob = b"".join(parts)
        return blob[start - base : stop - base]

    # -- records --------------------------------------------------------------------------

    def local_header(self, index: int) -> bytes:
        p = self._placed[index]
        m = p.member
        date, clock = dos_datetime(m.mtime)
        flags = _FLAG_UTF8
        if m.crc32 is None:
            # Sizes and CRC follow the data; a Zip64 extra then carries zeros like the
            # 32-bit fields do (the form zipstream-ng and Info-ZIP write and read).
            flags |= _FLAG_DESCRIPTOR
            crc, size32 = 0, 0
            size64 = 0
        else:
            crc, size32 = m.crc32, m.size
            size64 = m.size
        extra = b""
        if p.zip64:
            extra += struct.pack("<HHQQ", _EXTRA_ZIP64, 16, size64, size64)
            size32 = ZIP32_LIMIT
        extra += _extended_time(m.mtime)
        version = _VERSION_ZIP64 if p.zip64 else _VERSION_DEFAULT
        header = _LOCAL.pack(
            _SIG_LOCAL, version, flags, 0, clock, date, crc, size32, size32, len(p.name), len(extra)
        )
        return header + p.name + extra

    def data_descriptor(self, index: int, crc: int) -> bytes:
        p = self._placed[index]
        if p.descriptor_size == 0:
            return b""
        size = p.member.size
        if p.zip64:
            return _DESCRIPTOR64.pack(_SIG_DESCRIPTOR, crc, size, size)
        return _DESCRIPTOR32.pack(_SIG_DESCRIPTOR, crc, size, size)

    def central_directory(self, crcs: Sequence[int]) -> Iterator[bytes]:
        """The central directory and end records, in blocks. `crcs[i]` is member i's CRC-32
        as computed while its data was written."""
        if len(crcs) != len(self._placed):
            raise ValueError("one CRC per member is required")
        block: list[bytes] = []
        pending = 0
        for p, crc in zip(self._placed, crcs, strict=True):
            record = self._central_record(p, crc)
            block.append(record)
            pending += len(record)
            if pending >= ZIP_DIRECTORY_BLOCK_BYTES:
                yield b"".join(block)
                block, pending = [], 0
        block.append(self._end_records())
        yield b"".join(block)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _central_zip64_fields(p: _Placed) -> list[int]:
        fields: list[int] = []
        if p.zip64:
            fields += [p.member.size, p.member.size]
        if p.offset >= ZIP32_LIMIT:
            fields.append(p.offset)
        return fields

    def _central_size(self, p: _Placed) -> int:
        fields = self._central_zip64_fields(p)
        zip64_extra = 4 + 8 * len(fields) if fields else 0
        return _CENTRAL.size + len(p.name) + zip64_extra + len(_extended_time(p.member.mtime))

    def _central_record(self, p: _Placed, crc: int) -> bytes:
        m = p.member
        date, clock = dos_datetime(m.mtime)
        fields = self._central_zip64_fields(p)
        extra = b""
        if fields:
            extra = struct.pack(f"<HH{len(fields)}Q", _EXTRA_ZIP64, 8 * len(fields), *fields)
        extra += _extended_time(m.mtime)
        flags = _FLAG_UTF8 | (_FLAG_DESCRIPTOR if m.crc32 is None else 0)
        size32 = ZIP32_LIMIT if p.zip64 else m.size
        offset32 = min(p.offset, ZIP32_LIMIT)
        version = _VERSION_ZIP64 if fields else _VERSION_DEFAULT
        record = _CENTRAL.pack(
            _SIG_CENTRAL,
            _MADE_BY_UNIX | version,
            version,
            flags,
            0,
            clock,
            date,
            crc,
            size32,
            size32,
            len(p.name),
            len(extra),
            0,  # comment length
            0,  # disk number
            0,  # internal attributes
            _REGULAR_FILE_0644,
            offset32,
        )
        return record + p.name + extra

    def _needs_end64(self) -> bool:
        return (
            len(self._placed) >= ZIP16_LIMIT
            or self.directory_size >= ZIP32_LIMIT
            or self.directory_offset >= ZIP32_LIMIT
        )

    def _end_records(self) -> bytes:
        count = len(self._placed)
        records = b""
        if self._needs_end64():
            end64_offset = self.directory_offset + self.directory_size
            records += _END64.pack(
                _SIG_END64,
                _END64.size - 12,  # size of the record after this field
                _MADE_BY_UNIX | _VERSION_ZIP64,
                _VERSION_ZIP64,
                0,
                0,
                count,
                count,
                self.directory_size,
                self.directory_offset,
            )
            records += _LOCATOR64.pack(_SIG_LOCATOR64, 0, end64_offset, 1)
        records += _END.pack(
            _SIG_END,
            0,
            0,
            min(count, ZIP16_LIMIT),
            min(count, ZIP16_LIMIT),
            min(self.directory_size, ZIP32_LIMIT),
            min(self.directory_offset, ZIP32_LIMIT),
            0,
        )
        return records
