"""Typed reads of a mapping of environment variables, and the storage locations they name.

`service/settings.py` hands it the process environment (the only module that reads it); every read
fails with a `ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from service.exceptions import ConfigError

#: What ZIPEDGE_RATE_LIMITS may name: one limit per kind of request.
RATE_LIMITED_ACTIONS = ("download", "job", "upload", "archive", "link")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Environment:
    """Typed reads of environment variables, each failing with the variable's name."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    def text(self, name: str, default: str = "") -> str:
        return self.raw.get(name, default).strip()

    def integer(self, name: str, default: int, minimum: int = 1) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
        return value

    def flag(self, name: str) -> bool:
        raw = self.text(name).lower()
        if raw in ("", "0", "false", "no", "off"):
            return False
        if raw in ("1", "true", "yes", "on"):
            return True
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        raw = self.text(name).lower() or options[0]
        if raw not in options:
            raise ConfigError(f"{name}: expected one of {', '.join(options)}, got {raw!r}")
        return raw

    def networks(self, name: str, default: str) -> tuple[Network, ...]:
        raw = self.raw.get(name, default)
        try:
            return tuple(ipaddress.ip_network(item.strip()) for item in raw.split(",") if item.strip())
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    def rate_limits(self, name: str) -> tuple[tuple[str, str], ...]:
        """`download=30/minute,job=10/minute`: (action, limit) pairs, each limit checked."""
        from limits import parse

        pairs: dict[str, str] = {}
        for item in self.text(name).split(","):
            if not item.strip():
                continue
            action, _, limit = (part.strip() for part in item.partition("="))
            if action not in RATE_LIMITED_ACTIONS:
                raise ConfigError(
                    f"{name}: unknown action {action!r} (one of {', '.join(RATE_LIMITED_ACTIONS)})"
                )
            try:
                parse(limit)
            except ValueError:
                raise ConfigError(
                    f"{name}: {action}: expected a limit such as 30/minute, got {limit!r}"
                ) from None
            pairs[action] = limit
        return tuple(pairs.items())

    def pem(self, name: str) -> str:
        """A PEM block, given inline or as the path of a file holding it."""
        raw = self.text(name)
        if not raw or "-----BEGIN" in raw:
            return raw.replace("\\n", "\n")  # one-line forms (docker env files) escape newlines
        try:
            return Path(raw).read_text()
        except OSError as exc:
            raise ConfigError(f"{name}: neither a PEM block nor a readable file: {exc}") from None

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw and urlsplit(raw).scheme not in schemes:
            raise ConfigError(f"{name}: expected a {'/'.join(schemes)} URL, got {raw!r}")
        return raw


@dataclass(frozen=True, slots=True)
class Location:
    """Where objects live: a folder (`file:///abs/dir`) or S3 (`s3://bucket/prefix`)."""

    scheme: Literal["file", "s3"]
    path: Path  #: the folder, for "file"
    bucket: str  #: for "s3"
    prefix: str  #: for "s3": "" or "photos/" (always ends in "/")

    @classmethod
    def parse(cls, variable: str, value: str) -> Location:
        parts = urlsplit(value)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ConfigError(f"{variable}: a file URL needs an absolute path (file:///abs/dir)")
            return cls("file", Path(parts.path), "", "")
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ConfigError(f"{variable}: an S3 URL needs a bucket (s3://bucket/prefix)")
            prefix = parts.path.strip("/")
            return cls("s3", Path(), parts.netloc, f"{prefix}/" if prefix else "")
        raise ConfigError(
            f"{variable}: unknown scheme in {value!r}; use file:///abs/dir or s3://bucket/prefix"
        )

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
