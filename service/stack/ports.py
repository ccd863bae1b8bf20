"""Free TCP ports on the loopback interface.

A probed port is only *likely* to stay free until the server binds it; launchers retry
with fresh ports when a server fails to bind.
"""

from __future__ import annotations

import contextlib
import random
import socket

HOST = "127.0.0.1"

#: Lowest port handed out by `free_ports_with_offset` (below it live well-known services).
_LOW_PORT = 10000


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (chosen by the kernel)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports; the probe sockets stay open until all are chosen so the
    kernel cannot hand out the same port twice."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _try_bind(stack: contextlib.ExitStack, port: int) -> bool:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        sock.bind((HOST, port))
    except OSError:
        return False
    return True


def free_ports_with_offset(count: int, offset: int) -> list[int]:
    """`count` distinct ports p such that both p and p + offset are free (SeaweedFS puts a
    gRPC listener at port + 10000).

    Both ports are taken below the kernel's ephemeral range when it leaves room, so an
    outgoing connection cannot grab them between this probe and the server's bind.
    """
    if offset <= 0:
        raise ValueError("offset must be positive")
    high = _ephemeral_low() - 1 - offset
    if high - _LOW_PORT < count * 50:
        high = 65535 - offset
    if high <= _LOW_PORT:
        raise ValueError(f"no room for ports with offset {offset}")
    rng = random.SystemRandom()
    with contextlib.ExitStack() as stack:
        chosen: list[int] = []
        taken: set[int] = set()
        for _ in range(count * 200):
            if len(chosen) == count:
                break
            port = rng.randint(_LOW_PORT, high)
            if {port, port + offset} & taken:
                continue
            if _try_bind(stack, port) and _try_bind(stack, port + offset):
                chosen.append(port)
                taken.update((port, port + offset))
        if len(chosen) < count:
            raise OSError(f"could not find {count} free port pairs (offset {offset})")
        return chosen
