"""Frozen value objects and parsers: sizes ("8GiB"), addresses ("host:port"), limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "MAX_JOB_BYTES",
    "MAX_KEY_BYTES",
    "Address",
    "Timeouts",
    "format_size",
    "parse_size",
]

#: Longest key, in UTF-8 bytes. Keys are names, not data: 1 KiB leaves room for deep paths.
MAX_KEY_BYTES = 1024
#: Longest job name, in UTF-8 bytes (it travels in every frame header).
MAX_JOB_BYTES = 255

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"8GiB"``, ``"512 MB"`` or ``"1.5GiB"``.

    Decimal units (kB, MB, GB) are powers of 1000 and binary units (KiB, MiB, GiB) powers of
    1024, as the IEC defines them.
    """
    if isinstance(value, bool):
        raise ConfigError(f"size must be an int or a string, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"size must not be negative: {value}")
        return value
    match = _SIZE_RE.match(value)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"not a size: {value!r} (try '8GiB', '512MB' or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(n: float) -> str:
    """A short human form of a byte count, in binary units (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True, slots=True)
class Address:
    """A node's TCP address."""

    host: str
    port: int

    @classmethod
    def parse(cls, value: str | tuple[str, int] | Address) -> Address:
        """From ``"host:port"``, ``"[v6]:port"``, a ``(host, port)`` tuple or an Address."""
        if isinstance(value, Address):
            return value
        if isinstance(value, tuple):
            host, port = value
        else:
            host, sep, port_text = value.rpartition(":")
            if not sep or not host or not port_text.isdigit():
                raise ConfigError(f"not an address: {value!r} (expected 'host:port')")
            port = int(port_text)
        host = host.strip("[]")
        if not 0 < port < 65536:
            raise ConfigError(f"port out of range in {value!r}")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Client timeouts in seconds; ``None`` waits forever."""

    connect: float | None = 5.0
    #: Longest wait for any single socket read or write, not for a whole transfer.
    io: float | None = 60.0
