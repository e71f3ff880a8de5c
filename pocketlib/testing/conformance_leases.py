"""Tier conformance, leases: the read-only buffers a node sends from, which outlive a delete
or an overwrite, and ``read_small``, the copy path for small values."""

from __future__ import annotations

import pytest

from ..errors import NotFoundError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_kit import JOB, TierChecks, random_value

__all__ = ["LeaseChecks"]


class LeaseChecks(TierChecks):
    """What a tier does with leases and small reads."""

    # -- leases -------------------------------------------------------------------------------
    def test_lease_buffers_hold_the_value(self, tier: TierDriver) -> None:
        data = random_value(50_000, 4)
        self.put(tier, JOB, "k", data)
        with tier.lease(JOB, "k") as lease:
            assert lease.meta.size == len(data)
            assert sum(len(b) for b in lease.buffers) == len(data)
            joined = b"".join(bytes(b) for b in lease.buffers)
            assert joined == data
            for start, end in ((0, 1), (10, 20_000), (49_999, 50_000), (0, 50_000)):
                assert joined[start:end] == data[start:end]

    def test_lease_buffers_are_read_only(self, tier: TierDriver) -> None:
        self.put(tier, JOB, "k", b"immutable")
        with tier.lease(JOB, "k") as lease:
            for buf in lease.buffers:
                assert buf.readonly
                with pytest.raises(TypeError):
                    buf[0] = 0
        assert tier.get(JOB, "k") == b"immutable"

    def test_lease_survives_delete(self, tier: TierDriver) -> None:
        data = random_value(20_000, 5)
        self.put(tier, JOB, "k", data)
        charged = tier.stats().used
        first = tier.lease(JOB, "k")
        second = tier.lease(JOB, "k")
        assert tier.delete(JOB, "k")
        assert not tier.exists(JOB, "k")
        # Other values written meanwhile must not land in the leased space.
        for i in range(8):
            self.put(tier, JOB, f"other{i}", random_value(20_000, 100 + i))
        assert first.tobytes() == data
        assert second.tobytes() == data
        others = tier.stats().used - charged
        first.release()
        first.release()  # idempotent
        assert tier.stats().used == charged + others, "freed while a lease was still held"
        assert second.tobytes() == data
        second.release()
        assert tier.stats().used == others
        for i in range(8):
            assert tier.get(JOB, f"other{i}") == random_value(20_000, 100 + i)

    def test_lease_survives_overwrite(self, tier: TierDriver) -> None:
        old, new = random_value(30_000, 6), random_value(30_000, 7)
        self.put(tier, JOB, "k", old)
        lease = tier.lease(JOB, "k")
        self.put(tier, JOB, "k", new)
        assert tier.get(JOB, "k") == new
        assert lease.tobytes() == old
        assert lease.meta.checksum == checksum(old)
        assert tier.stats().used == 2 * self.charge(tier, len(old))
        lease.release()
        assert tier.stats().used == self.charge(tier, len(new))
        assert tier.get(JOB, "k") == new

    def test_lease_take_deletes_in_the_same_step(self, tier: TierDriver) -> None:
        data = random_value(10_000, 8)
        self.put(tier, JOB, "k", data)
        lease = tier.lease(JOB, "k", take=True)
        assert not tier.exists(JOB, "k")
        with pytest.raises(NotFoundError):
            tier.lease(JOB, "k", take=True)
        assert tier.stats().objects == 0
        assert lease.tobytes() == data
        lease.release()
        assert tier.stats().used == 0

    def test_read_small_copies_small_values_only(self, tier: TierDriver) -> None:
        small, large = random_value(100, 12), random_value(5000, 13)
        self.put(tier, JOB, "small", small)
        self.put(tier, JOB, "large", large)
        got = tier.read_small(JOB, "small", 1000)
        assert got is not None
        meta, data = got
        assert (data, meta.size, meta.checksum) == (small, 100, checksum(small))
        assert tier.read_small(JOB, "large", 1000) is None  # too large: lease it instead
        assert tier.read_small(JOB, "large", 1000, take=True) is None
        assert tier.exists(JOB, "large"), "take must not delete a value it did not return"
        with pytest.raises(NotFoundError):
            tier.read_small(JOB, "missing", 1000)

    def test_read_small_take_deletes_in_the_same_step(self, tier: TierDriver) -> None:
        data = random_value(300, 14)
        self.put(tier, JOB, "k", data)
        got = tier.read_small(JOB, "k", 1000, take=True)
        assert got is not None
        assert got[1] == data
        assert not tier.exists(JOB, "k")
        assert tier.stats().used == 0
        with pytest.raises(NotFoundError):
            tier.read_small(JOB, "k", 1000, take=True)

    def test_read_many_answers_each_key_as_read_small_would(self, tier: TierDriver) -> None:
        small, large, other = random_value(100, 15), random_value(5000, 16), random_value(7, 17)
        self.put(tier, JOB, "small", small)
        self.put(tier, JOB, "large", large)
        self.put(tier, JOB, "other", other)
        got = tier.read_many(JOB, ["large", "missing", "small", "other", "small"], 1000)
        assert got[0] is None  # too large: lease it instead
        assert isinstance(got[1], NotFoundError)  # a miss is this key's answer, not the batch's
        for answer, value in ((got[2], small), (got[3], other), (got[4], small)):
            assert isinstance(answer, tuple)
            meta, data = answer
            assert (data, meta.size, meta.checksum) == (value, len(value), checksum(value))

    def test_read_many_take_deletes_only_what_it_returned(self, tier: TierDriver) -> None:
        small, large = random_value(200, 18), random_value(5000, 19)
        self.put(tier, JOB, "small", small)
        self.put(tier, JOB, "large", large)
        got = tier.read_many(JOB, ["small", "large", "small"], 1000, take=True)
        assert isinstance(got[0], tuple)
        assert got[0][1] == small
        assert got[1] is None
        assert isinstance(got[2], NotFoundError)  # taken by the first
        assert not tier.exists(JOB, "small")
        assert tier.read_small(JOB, "large", 10_000) is not None
