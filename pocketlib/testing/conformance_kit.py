"""What every part of the tier conformance suite shares: the two jobs it stores under,
reproducible values, and :class:`TierChecks`, the base that builds the tier under test and
writes through the two-phase path."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import ClassVar

import pytest

from ..protocol import checksum
from ..tiers.base import ObjectMeta, Reservation, TierDriver

__all__ = ["JOB", "OTHER_JOB", "TierChecks", "fill", "random_value"]

JOB = "job-a"
OTHER_JOB = "job-b"


def random_value(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible pseudo-random bytes."""
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def fill(res: Reservation, data: bytes) -> None:
    """Copy ``data`` into a reservation's buffers, in order."""
    assert sum(len(b) for b in res.buffers) == len(data) == res.size
    pos = 0
    for buf in res.buffers:
        buf[:] = data[pos : pos + len(buf)]
        pos += len(buf)


class TierChecks:
    """The base of every part of the suite: the tier under test and the write helpers;
    subclasses implement :meth:`make_tier`."""

    #: Capacity of the tier the ``tier`` fixture builds.
    capacity: ClassVar[int] = 1 << 20
    #: Capacity of the small tiers that the capacity tests fill up.
    small_capacity: ClassVar[int] = 64 * 1024

    def make_tier(self, capacity: int) -> TierDriver:
        """A new, empty tier of ``capacity`` bytes (the subclass's hook)."""
        raise NotImplementedError("subclasses of TierConformance implement make_tier()")

    @pytest.fixture
    def tier(self) -> Iterator[TierDriver]:
        """A fresh tier of :attr:`capacity` bytes, closed after the test."""
        t = self.make_tier(self.capacity)
        try:
            yield t
        finally:
            t.close()

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def charge(tier: TierDriver, nbytes: int) -> int:
        """Bytes the tier charges for a value of ``nbytes`` (measured with a reservation)."""
        res = tier.reserve(nbytes)
        try:
            return res.charged
        finally:
            tier.abort(res)

    @staticmethod
    def put(tier: TierDriver, job: str, key: str, data: bytes, **kw: float) -> ObjectMeta:
        """Store ``data`` with its checksum through the two-phase write path."""
        res = tier.reserve(len(data))
        fill(res, data)
        ttl = kw.get("ttl")
        return tier.commit(res, job, key, checksum=checksum(data), ttl=ttl)
