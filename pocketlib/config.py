"""Frozen value objects and parsers: sizes ("8GiB"), addresses ("host:port"), limits."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "FUNCTION_THROUGHPUT",
    "MAX_JOB_BYTES",
    "MAX_KEY_BYTES",
    "Address",
    "JobHints",
    "Timeouts",
    "format_rate",
    "format_size",
    "parse_size",
    "parse_throughput",
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


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*?)\s*(?:/s|ps)?\s*$")
# Case matters for rates: "Gb/s" is gigabits (network), "GB/s" gigabytes.
_RATE_UNITS = {
    "": 1, "B": 1, "b": 1 / 8,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
    "kb": 1000 / 8, "Kb": 1000 / 8, "Mb": 1000**2 / 8, "Gb": 1000**3 / 8, "Tb": 1000**4 / 8,
}  # fmt: skip
#: What one serverless function moves at most, in bytes/s (Pocket's 600 Mb/s per Lambda).
FUNCTION_THROUGHPUT = 600 * 1000**2 // 8
#: Beyond these a hint is a mistake, not a plan: 1 EiB of capacity, 1 PB/s, 10M functions.
_MAX_CAPACITY = 1 << 60
_MAX_THROUGHPUT = 1000**5
_MAX_CONCURRENCY = 10_000_000


def parse_throughput(value: int | str) -> int:
    """Bytes per second from an int or a string such as ``"3GB/s"`` or ``"600Mb/s"``.

    Upper-case ``B`` is bytes and lower-case ``b`` bits (``"10Gbps"`` is 1.25 GB/s), as network
    rates are written; ``/s`` or ``ps`` is optional.
    """
    if isinstance(value, bool):
        raise ConfigError(f"throughput must be an int or a string, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"throughput must not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"throughput must be an int or a string, not {value!r}")
    match = _RATE_RE.match(value)
    if match is None or match.group(2) not in _RATE_UNITS:
        raise ConfigError(
            f"not a throughput: {value!r} (try '3GB/s', '600Mb/s' or a number of bytes/s)"
        )
    return int(float(match.group(1)) * _RATE_UNITS[match.group(2)])


def format_rate(n: float) -> str:
    """A short human form of bytes/s (``"1.2 GB/s"``), in decimal units as rates are quoted."""
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B/s" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB/s"


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


@dataclass(frozen=True, slots=True)
class JobHints:
    """What a job tells the controller about itself; every hint is optional.

    Sizes take ints (bytes) or strings (``"12GB"``), throughput ints (bytes/s) or strings
    (``"3GB/s"``, ``"24Gb/s"``); both are normalised to ints. What the controller derives
    from missing hints is in docs/control-plane.md: a function moves ``FUNCTION_THROUGHPUT``
    (600 Mb/s) at most, and with neither throughput nor concurrency the job gets two nodes'
    worth of throughput.

    >>> JobHints(capacity="12GB", peak_throughput="24Gb/s").peak_throughput
    3000000000
    """

    #: Place the job on DRAM (Pocket's default); False lets the controller choose the
    #: cheapest tier that meets the job's throughput and capacity.
    latency_sensitive: bool = True
    #: Most functions running at once.
    max_concurrency: int | None = None
    #: Bytes the job stores at its peak.
    capacity: int | str | None = None
    #: Bytes/s the job moves at its peak, all functions together.
    peak_throughput: int | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.latency_sensitive, bool):
            raise ConfigError(f"latency_sensitive must be a bool, not {self.latency_sensitive!r}")
        n = self.max_concurrency
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"max_concurrency must be a positive int, not {n!r}")
            if n > _MAX_CONCURRENCY:
                raise ConfigError(f"max_concurrency {n} is beyond {_MAX_CONCURRENCY:,} functions")
        # 0 means "not given", as in Pocket's API (a job that stores nothing or moves nothing
        # at all has no use for an allocation, and would divide the placement by zero).
        if self.capacity in (0, "0"):
            object.__setattr__(self, "capacity", None)
        if self.peak_throughput in (0, "0"):
            object.__setattr__(self, "peak_throughput", None)
        if self.capacity is not None:
            capacity = parse_size(_no_float(self.capacity, "capacity"))
            if capacity == 0:
                raise ConfigError(f"capacity {self.capacity!r} is zero: leave it out instead")
            if capacity > _MAX_CAPACITY:
                raise ConfigError(f"capacity {format_size(capacity)} is beyond any cluster")
            object.__setattr__(self, "capacity", capacity)
        if self.peak_throughput is not None:
            rate = parse_throughput(_no_float(self.peak_throughput, "peak_throughput"))
            if rate == 0:
                raise ConfigError(f"peak_throughput {self.peak_throughput!r} is zero: leave it out")
            if rate > _MAX_THROUGHPUT:
                raise ConfigError(f"peak_throughput {format_rate(rate)} is beyond any cluster")
            object.__setattr__(self, "peak_throughput", rate)

    def as_dict(self) -> dict[str, object]:
        """The hints as JSON-ready values."""
        return {
            "latency_sensitive": self.latency_sensitive,
            "max_concurrency": self.max_concurrency,
            "capacity": self.capacity,
            "peak_throughput": self.peak_throughput,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> JobHints:
        """Hints from :meth:`as_dict` output (unknown fields are refused)."""
        unknown = set(data) - {"latency_sensitive", "max_concurrency", "capacity",
                               "peak_throughput"}  # fmt: skip
        if unknown:
            raise ConfigError(f"unknown job hints: {', '.join(sorted(unknown))}")
        return cls(**data)  # type: ignore[arg-type]


def _no_float(value: object, name: str) -> int | str:
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite, non-negative number, not {value!r}")
        return int(value)
    if not isinstance(value, int | str) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a string, not {value!r}")
    return value
