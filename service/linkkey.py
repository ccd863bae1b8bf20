"""The HMAC key of the service's own signed URLs (the upload body URL of the folder
default): ZIPEDGE_LINK_SECRET, else the JWT secret, else a random key created once per
data dir (`link.key`, mode 0600) and shared by every process using that dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_FILE = "link.key"
KEY_BYTES = 32


def link_key(secret: str, data_dir: Path) -> bytes:
    if secret:
        return secret.encode("utf-8")
    path = data_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_hex(KEY_BYTES).encode("ascii")
    try:
        # O_EXCL: of processes starting together, one creates it and the rest read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(fresh)
    return fresh
