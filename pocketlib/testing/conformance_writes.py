"""Tier conformance, writes: no aliasing of the caller's buffers or of values handed out, and
the two-phase write path (reserve, fill, commit or abort, join)."""

from __future__ import annotations

import pytest

from ..errors import NotFoundError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_kit import JOB, TierChecks, fill, random_value

__all__ = ["WriteChecks"]


class WriteChecks(TierChecks):
    """What a tier does with the bytes it is given and the space it reserves."""

    # -- aliasing -----------------------------------------------------------------------------
    def test_put_does_not_alias_the_caller_buffer(self, tier: TierDriver) -> None:
        buf = bytearray(b"original value")
        tier.put(JOB, "k", buf)
        buf[:] = b"XXXXXXXXXXXXXX"
        assert tier.get(JOB, "k") == b"original value"
        view = memoryview(bytearray(b"through a view"))
        tier.put(JOB, "v", view)
        view[:] = b"..............."[: len(view)]
        assert tier.get(JOB, "v") == b"through a view"

    def test_get_returns_an_independent_copy(self, tier: TierDriver) -> None:
        tier.put(JOB, "k", b"stored")
        got = tier.get(JOB, "k")
        assert isinstance(got, bytes)
        copy = bytearray(got)
        copy[:] = b"zzzzzz"
        with tier.lease(JOB, "k") as lease:
            leased = lease.tobytes()
        assert isinstance(leased, bytes)
        tier.put(JOB, "k", b"second")
        # Copies taken earlier do not follow the stored value.
        assert got == b"stored"
        assert leased == b"stored"
        assert tier.get(JOB, "k") == b"second"

    # -- the two-phase write path -------------------------------------------------------------
    def test_reservation_buffers_cover_the_size(self, tier: TierDriver) -> None:
        for n in (0, 1, 100, 65_536, 300_001):
            res = tier.reserve(n)
            assert res.size == n
            assert sum(len(b) for b in res.buffers) == n
            assert all(not b.readonly for b in res.buffers)
            assert res.charged >= n
            tier.abort(res)
        assert tier.stats().used == 0

    def test_reserve_then_abort_leaves_nothing(self, tier: TierDriver) -> None:
        tier.put(JOB, "keep", b"kept")
        base = tier.stats().used
        res = tier.reserve(40_000)
        assert tier.stats().used == base + res.charged
        fill(res, random_value(40_000, 1))
        tier.abort(res)
        stats = tier.stats()
        assert stats.used == base
        assert stats.objects == 1
        assert tier.list(JOB) == (["keep"], False)
        assert tier.get(JOB, "keep") == b"kept"

    def test_uncommitted_reservation_is_invisible(self, tier: TierDriver) -> None:
        data = random_value(5000, 2)
        res = tier.reserve(len(data))
        fill(res, data)
        assert not tier.exists(JOB, "k")
        with pytest.raises(NotFoundError):
            tier.get(JOB, "k")
        assert tier.list(JOB) == ([], False)
        assert tier.stats().objects == 0
        tier.commit(res, JOB, "k", checksum=checksum(data))
        assert tier.get(JOB, "k") == data
        assert tier.list(JOB) == (["k"], False)

    def test_uncommitted_overwrite_keeps_the_old_value_visible(self, tier: TierDriver) -> None:
        tier.put(JOB, "k", b"old")
        res = tier.reserve(3)
        fill(res, b"new")
        assert tier.get(JOB, "k") == b"old"
        tier.commit(res, JOB, "k", checksum=checksum(b"new"))
        assert tier.get(JOB, "k") == b"new"

    def test_join_makes_one_object_of_the_parts(self, tier: TierDriver) -> None:
        sizes = [1000, 65_536, 3, 40_001, 0]
        parts = []
        for i, n in enumerate(sizes):
            res = tier.reserve(n)
            fill(res, random_value(n, 20 + i))
            parts.append(res)
        charged = sum(p.charged for p in parts)
        whole = b"".join(random_value(n, 20 + i) for i, n in enumerate(sizes))
        joined = tier.join(parts)
        assert joined.size == len(whole)
        tier.commit(joined, JOB, "joined", checksum=checksum(whole))
        assert tier.get(JOB, "joined") == whole
        assert tier.stat(JOB, "joined").size == len(whole)
        with tier.lease(JOB, "joined") as lease:
            joined_view = b"".join(bytes(b) for b in lease.buffers)
            assert joined_view[999:1002] == whole[999:1002]
            assert joined_view[66_530:66_545] == whole[66_530:66_545]
        stats = tier.stats()
        assert stats.objects == 1
        assert stats.used == charged
        assert tier.delete(JOB, "joined")
        assert tier.stats().used == 0

    # -- batches ------------------------------------------------------------------------------
    def test_put_many_stores_each_item_in_order(self, tier: TierDriver) -> None:
        a, b, c = random_value(100, 31), random_value(700, 32), random_value(50, 33)
        got = tier.put_many(JOB, [("a", a, checksum(a), 0), ("b", b, checksum(b), 0),
                                  ("a", c, checksum(c), 0)])  # fmt: skip
        assert all(not isinstance(m, Exception) for m in got)
        assert [m.size for m in got] == [100, 700, 50]  # type: ignore[union-attr]
        assert tier.get(JOB, "a") == c  # the later item of a key wins
        assert tier.get(JOB, "b") == b
        assert tier.stat(JOB, "b").checksum == checksum(b)
        assert tier.stats().objects == 2
