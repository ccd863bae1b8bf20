"""The local-server launchers: they start on free loopback ports, answer, and free
everything when stopped."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from service.stack.ports import free_port, free_ports, free_ports_with_offset
from service.stack.redis import RedisServer
from service.stack.seaweedfs import GRPC_OFFSET, SeaweedFS
from tests.servers import port_is_free

integration = pytest.mark.integration


def listening(pid: int) -> set[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections("all")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def test_free_ports() -> None:
    assert port_is_free(free_port())
    ports = free_ports(5)
    assert len(set(ports)) == 5
    paired = free_ports_with_offset(5, GRPC_OFFSET)
    assert len(set(paired)) == 5
    assert all(p + GRPC_OFFSET < 65536 and port_is_free(p) and port_is_free(p + GRPC_OFFSET) for p in paired)


@integration
def test_redis_server(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    with server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.pid is not None
        assert listening(server.pid) == {("127.0.0.1", server.port)}
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
        pid, port = server.pid, server.port
    assert server.pid is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert port_is_free(port)
    assert not list(tmp_path.glob("*.rdb"))
    assert "Ready to accept connections" in server.log_tail()


@integration
def test_seaweedfs_listens_on_loopback_only_and_stops(tmp_path: Path) -> None:
    server = SeaweedFS(tmp_path / "weed", bucket="first")
    with server:
        assert server.pid is not None
        assert server.endpoint_url == f"http://127.0.0.1:{server.s3_port}"
        addresses = listening(server.pid)
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}
        expected = set(server.ports.values()) | {p + GRPC_OFFSET for p in server.ports.values()}
        assert {port for _, port in addresses} <= expected
        assert ("127.0.0.1", server.s3_port) in addresses

        server.create_bucket("second")
        server.create_bucket("second")  # already ours: fine
        status, _ = server.request("PUT", "/second/kept.txt", body=b"kept")
        assert status == 200
        ports = dict(server.ports)
    assert server.pid is None
    assert all(port_is_free(p) and port_is_free(p + GRPC_OFFSET) for p in ports.values())
    assert not list((tmp_path / "weed").glob("*.sock"))
    leftovers = [Path(f"/tmp/seaweedfs-{n}-grpc-{p + GRPC_OFFSET}.sock") for n, p in ports.items()]
    assert not [path for path in leftovers if path.exists()]

    # The same data dir again (as `zipedge stack` does): new ports, data kept.
    with server:
        assert server.request("GET", "/second/kept.txt") == (200, b"kept")


def test_seaweedfs_takes_a_volume_for_every_bucket_whatever_the_free_disk(tmp_path: Path) -> None:
    # A test session makes hundreds of buckets, one SeaweedFS collection each; weed's own
    # volume count (free disk / volume size) ran out at a few dozen and PUTs failed.
    with SeaweedFS(tmp_path / "weed") as server:
        status_url = f"http://127.0.0.1:{server.ports['master']}/dir/status"
        with urllib.request.urlopen(status_url, timeout=10) as answer:
            topology = json.load(answer)["Topology"]
        assert topology["Max"] >= 1000
        for i in range(3):
            server.create_bucket(f"many-{i}")
            assert server.request("PUT", f"/many-{i}/one.jpg", body=b"x")[0] == 200
