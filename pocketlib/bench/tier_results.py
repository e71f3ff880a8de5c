"""What part d of ``pocket bench`` measured: the result records its measurements fill in and
the report reads, and the names of the systems and operations they are keyed by."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..workloads.sort import SortResult
from .measure import LatencySeries

__all__ = ["COLO_OPS", "RAW_S3", "REDIS", "ColdRead", "Recovery", "TierResults"]

#: The co-located comparison's operations, in report order.
COLO_OPS = (
    "memcpy (numpy.copyto)",
    "co-located get_into",
    "TCP get_into",
    "co-located get_buffer",
    "co-located put",
    "TCP put",
)
REDIS, RAW_S3 = "redis", "raw s3"


@dataclass
class ColdRead:
    """Part d.4: 16 MiB GETs from a restarted nvme node after the page cache was dropped."""

    size: int
    values: int
    dropped: bool
    drop_error: str
    resident_before: int | None  # bytes of the data file in the page cache before the reads
    file_bytes: int
    cold_ns: list[int] = field(default_factory=list)
    warm_ns: list[int] = field(default_factory=list)

    @property
    def cold_gbps(self) -> float:
        return self.size / float(np.median(self.cold_ns)) if self.cold_ns else 0.0

    @property
    def warm_gbps(self) -> float:
        return self.size / float(np.median(self.warm_ns)) if self.warm_ns else 0.0


@dataclass
class Recovery:
    """Part d.5: one tier's restarts after kill -9 with ``objects`` stored."""

    tier: str
    objects: int
    stored_bytes: int
    put_seconds: float
    restart_seconds: list[float] = field(default_factory=list)
    empty_seconds: list[float] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    read_back_ok: bool = True


@dataclass
class TierResults:
    """Everything part d measured, and notes on what it could not."""

    systems: list[str] = field(default_factory=list)
    latency: dict[tuple[str, str, int], LatencySeries] = field(default_factory=dict)
    colo: dict[str, LatencySeries] = field(default_factory=dict)
    sorts: list[SortResult] = field(default_factory=list)
    cold: ColdRead | None = None
    recovery: list[Recovery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # measurements that raised
    file_dirs: dict[str, str] = field(default_factory=dict)  # tier -> where its files were
    seconds: float = 0.0
