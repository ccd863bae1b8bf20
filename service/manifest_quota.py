"""How many archives, and how many bytes of manifests, one client may keep stored: the
limits (`ManifestQuota`) and, for the folder store of a single node, their books in this
process (`LocalQuotaBooks`). The Redis store keeps its books in Redis
(`service/manifests.py`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service.constants import (
    DEFAULT_MANIFEST_TTL_S,
    DEFAULT_MAX_ARCHIVE_BYTES_PER_CLIENT,
    DEFAULT_MAX_ARCHIVES_PER_CLIENT,
)
from service.exceptions import RateLimited, TooLarge


@dataclass(frozen=True, slots=True)
class ManifestQuota:
    max_count: int = DEFAULT_MAX_ARCHIVES_PER_CLIENT
    max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES_PER_CLIENT
    ttl_s: int = DEFAULT_MANIFEST_TTL_S

    def refuse(self, wait_s: float) -> RateLimited:
        return RateLimited(
            f"at most {self.max_count} stored archives ({self.max_bytes} bytes of manifests) per "
            "client: wait until older ones expire",
            retry_after=wait_s,
        )

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise TooLarge(f"the archive's manifest ({size} bytes) is over the {self.max_bytes}-byte quota")


@dataclass
class LocalQuotaBooks:
    """The quota's books in this process (the folder store serves one node): per client,
    {archive id: (expiry, size)}. They start empty after a restart."""

    quota: ManifestQuota
    clients: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def claim(self, client: str, archive_id: str, size: int) -> None:
        now = time.time()
        held = {k: v for k, v in self.clients.get(client, {}).items() if v[0] > now}
        if archive_id not in held and (
            len(held) >= self.quota.max_count
            or sum(s for _, s in held.values()) + size > self.quota.max_bytes
        ):
            raise self.quota.refuse(min(expiry for expiry, _ in held.values()) - now)
        held[archive_id] = (now + self.quota.ttl_s, size)
        self.clients[client] = held
