"""Independent readers for the archives under test: Python's zipfile (CRC and a SHA-256 of
every member), Info-ZIP `unzip -t`, 7-Zip `7z t`, libarchive `bsdtar -tf`, and
`stream-unzip`, which reads local headers only (as Java's ZipInputStream and macOS
Archive Utility effectively do) and so opens only archives without data descriptors.

Archives are never compared with bytes saved earlier: each reader must accept the file
and zipfile must find exactly the expected members with exactly the expected content.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

TOOLS = ("unzip", "7z", "bsdtar")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_with_zipfile(path: Path, expected: Mapping[str, str]) -> None:
    """`expected`: member name → SHA-256 of its content, in archive order."""
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC matches
        infos = archive.infolist()
        assert [i.filename for i in infos] == list(expected)
        for info in infos:
            digest = hashlib.sha256()
            with archive.open(info) as member:
                while block := member.read(1 << 20):
                    digest.update(block)
            assert digest.hexdigest() == expected[info.filename], info.filename
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.flag_bits & 0x800  # UTF-8 names


def check_with_tools(path: Path, count: int) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"archive tools missing: {missing} (run scripts/system-deps)"
    unzip = subprocess.run(["unzip", "-t", "-qq", str(path)], capture_output=True, text=True)
    assert unzip.returncode == 0, unzip.stdout + unzip.stderr
    seven = subprocess.run(["7z", "t", str(path)], capture_output=True, text=True)
    assert seven.returncode == 0 and "Everything is Ok" in seven.stdout, seven.stdout + seven.stderr
    bsdtar = subprocess.run(["bsdtar", "-tf", str(path)], capture_output=True, text=True)
    assert bsdtar.returncode == 0, bsdtar.stderr
    assert len(bsdtar.stdout.splitlines()) == count


def descriptor_flags(path: Path) -> list[bool]:
    """For each member, whether its local header defers CRC and sizes to a descriptor."""
    with zipfile.ZipFile(path) as archive:
        return [bool(info.flag_bits & 0x08) for info in archive.infolist()]


def check_streaming(path: Path, expected: Mapping[str, str]) -> None:
    """Read the archive front to back from local headers alone, checking every member."""
    from stream_unzip import stream_unzip

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while block := handle.read(65536):
                yield block

    seen: dict[str, str] = {}
    for name, _, members in stream_unzip(chunks()):
        digest = hashlib.sha256()
        for block in members:
            digest.update(block)
        seen[name.decode("utf-8")] = digest.hexdigest()
    assert seen == dict(expected)


def check_archive(path: Path, expected: Mapping[str, str]) -> None:
    """Every reader; the streaming one too when no member has a data descriptor."""
    check_with_zipfile(path, expected)
    check_with_tools(path, len(expected))
    if not any(descriptor_flags(path)):
        check_streaming(path, expected)
