"""Independent readers for the archives under test: Python's zipfile (CRC and a SHA-256 of
every member), Info-ZIP `unzip -t`, 7-Zip `7z t` and libarchive `bsdtar -tf`.

Archives are never compared with bytes saved earlier: each reader must accept the file
and zipfile must find exactly the expected members with exactly the expected content.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from collections.abc import Mapping
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


def check_archive(path: Path, expected: Mapping[str, str]) -> None:
    check_with_zipfile(path, expected)
    check_with_tools(path, len(expected))
