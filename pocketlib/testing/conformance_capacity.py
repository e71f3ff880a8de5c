"""Tier conformance, accounting and capacity: ``stats()`` charges, a value too large refused,
an overwrite that does not fit, and a tier filled up then emptied."""

from __future__ import annotations

import pytest

from ..errors import CapacityError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_kit import JOB, OTHER_JOB, TierChecks, random_value

__all__ = ["CapacityChecks"]


class CapacityChecks(TierChecks):
    """What a tier charges, and what it refuses when full."""

    # -- accounting and capacity --------------------------------------------------------------
    def test_stats_accounting(self, tier: TierDriver) -> None:
        stats = tier.stats()
        assert stats.tier == tier.name
        assert stats.capacity == tier.capacity
        assert (stats.used, stats.objects, stats.peak_used) == (0, 0, 0)
        assert stats.used_by_job == {}
        sizes_a, sizes_b = [100, 5000, 70_000], [1, 64, 30_000, 200_000]
        for i, n in enumerate(sizes_a):
            tier.put(JOB, f"a{i}", random_value(n, i))
        for i, n in enumerate(sizes_b):
            tier.put(OTHER_JOB, f"b{i}", random_value(n, 10 + i))
        charge_a = sum(self.charge(tier, n) for n in sizes_a)
        charge_b = sum(self.charge(tier, n) for n in sizes_b)
        stats = tier.stats()
        assert stats.used == charge_a + charge_b
        assert stats.used >= sum(sizes_a) + sum(sizes_b)
        assert stats.objects == len(sizes_a) + len(sizes_b)
        assert stats.used_by_job == {JOB: charge_a, OTHER_JOB: charge_b}
        assert stats.objects_by_job == {JOB: len(sizes_a), OTHER_JOB: len(sizes_b)}
        assert stats.peak_used >= stats.used
        peak = stats.peak_used
        tier.delete_job(OTHER_JOB)
        stats = tier.stats()
        assert stats.used == charge_a
        assert stats.peak_used == peak, "peak_used must not fall when space is freed"
        assert stats.used_by_job == {JOB: charge_a}

    def test_value_larger_than_capacity_is_refused(self) -> None:
        with self.make_tier(self.small_capacity) as tier:
            tier.put(JOB, "k1", random_value(1000, 1))
            tier.put(JOB, "k2", random_value(3000, 2))
            before = tier.stats()
            too_big = random_value(tier.capacity + 1, 3)
            with pytest.raises(CapacityError):
                tier.reserve(tier.capacity + 1)
            with pytest.raises(CapacityError):
                tier.put(JOB, "k1", too_big)
            with pytest.raises(CapacityError):
                tier.put(JOB, "new", too_big)
            assert tier.get(JOB, "k1") == random_value(1000, 1)
            assert tier.get(JOB, "k2") == random_value(3000, 2)
            assert not tier.exists(JOB, "new")
            after = tier.stats()
            assert (after.used, after.objects, after.used_by_job) == (
                before.used, before.objects, before.used_by_job,
            )  # fmt: skip

    def test_overwrite_that_does_not_fit_keeps_the_old_value(self) -> None:
        with self.make_tier(self.small_capacity) as tier:
            size = tier.capacity * 5 // 8
            old, new = random_value(size, 1), random_value(size, 2)
            charged = self.charge(tier, size)
            tier.put(JOB, "k", old)
            try:
                tier.put(JOB, "k", new)
            except CapacityError:
                assert tier.get(JOB, "k") == old  # nothing stored was lost
                assert tier.stats().used == charged
            else:
                assert tier.get(JOB, "k") == new
            assert tier.stats().objects == 1

    def test_fill_until_full_then_delete_makes_room(self) -> None:
        with self.make_tier(self.small_capacity) as tier:
            size = 1000
            stored: list[str] = []
            with pytest.raises(CapacityError):  # noqa: PT012 - fill until it refuses
                for i in range(tier.capacity // size + 2):
                    tier.put(JOB, f"k{i:04d}", random_value(size, i))
                    stored.append(f"k{i:04d}")
            assert stored, "a tier refused its first small value"
            assert len(stored) * size <= tier.capacity
            for i, key in enumerate(stored):
                assert tier.get(JOB, key) == random_value(size, i)
            with pytest.raises(CapacityError):
                tier.put(JOB, "one-more", random_value(size, 999))
            assert tier.delete(JOB, stored[3])
            tier.put(JOB, "one-more", random_value(size, 999))
            assert tier.get(JOB, "one-more") == random_value(size, 999)
            # Delete every other value, then everything: the freed space is usable again.
            for key in stored[::2]:
                tier.delete(JOB, key)
            tier.delete_job(JOB)
            assert tier.stats().used == 0
            big = random_value(len(stored) * size, 7)
            tier.put(JOB, "big", big)
            assert tier.get(JOB, "big") == big

    def test_put_many_refuses_only_the_items_that_do_not_fit(self) -> None:
        with self.make_tier(self.small_capacity) as tier:
            small, too_big = random_value(1000, 1), random_value(tier.capacity + 1, 2)
            got = tier.put_many(JOB, [("a", small, checksum(small), 0),
                                      ("big", too_big, checksum(too_big), 0),
                                      ("b", small, checksum(small), 0)])  # fmt: skip
            assert isinstance(got[1], CapacityError)
            assert not isinstance(got[0], Exception)
            assert not isinstance(got[2], Exception)
            assert tier.get(JOB, "a") == small
            assert tier.get(JOB, "b") == small
            assert not tier.exists(JOB, "big")
