"""The behaviour every :class:`~pocketlib.tiers.TierDriver` must show, as a pytest base class.

Subclass :class:`TierConformance` in a test module and implement :meth:`make_tier`; pytest then
runs every ``test_*`` method below against your driver::

    from pocketlib.testing.conformance import TierConformance

    class TestMyTier(TierConformance):
        def make_tier(self, capacity: int) -> TierDriver:
            return MyTier(capacity)

The tests use only the public TierDriver interface and the accounting a node relies on:
``stats().used`` is the space charged to stored objects, open reservations and leased but
deleted objects, and it is back to zero once all of them are gone.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from ..errors import CapacityError, NotFoundError
from ..protocol import checksum
from ..tiers.base import ObjectMeta, Reservation, TierDriver

__all__ = ["TierConformance"]

JOB = "job-a"
OTHER_JOB = "job-b"


def _value(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible pseudo-random bytes."""
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def _fill(res: Reservation, data: bytes) -> None:
    """Copy ``data`` into a reservation's buffers, in order."""
    assert sum(len(b) for b in res.buffers) == len(data) == res.size
    pos = 0
    for buf in res.buffers:
        buf[:] = data[pos : pos + len(buf)]
        pos += len(buf)


class TierConformance:
    """Base class of a driver's conformance tests; implement :meth:`make_tier`."""

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
        _fill(res, data)
        ttl = kw.get("ttl")
        return tier.commit(res, job, key, checksum=checksum(data), ttl=ttl)

    # -- basic object operations --------------------------------------------------------------
    def test_put_get_roundtrip(self, tier: TierDriver) -> None:
        values = {f"k{n}": _value(n, seed=1) for n in (1, 7, 63, 64, 65, 1000, 4096, 100_003)}
        for key, data in values.items():
            meta = self.put(tier, JOB, key, data)
            assert meta.size == len(data)
            assert meta.checksum == checksum(data)
        for key, data in values.items():
            assert tier.get(JOB, key) == data
            assert tier.exists(JOB, key)
            stat = tier.stat(JOB, key)
            assert stat.size == len(data)
            assert stat.checksum == checksum(data)

    def test_metadata_and_versions(self, tier: TierDriver) -> None:
        m1 = tier.put(JOB, "a", b"one", checksum=12345, flags=1)
        m2 = tier.put(OTHER_JOB, "b", b"two")
        m3 = tier.put(JOB, "a", b"three")
        assert m1.version < m2.version < m3.version
        stat = tier.stat(JOB, "a")
        assert (stat.size, stat.checksum, stat.flags) == (5, m3.checksum, 0)
        assert stat.version == m3.version
        tier.put(JOB, "f", b"x", checksum=12345, flags=1)
        stat = tier.stat(JOB, "f")
        # The tier stores the checksum and flags it is given (the node checks, not the tier).
        assert (stat.checksum, stat.flags) == (12345, 1)
        with tier.lease(JOB, "f") as lease:
            assert lease.meta.flags == 1
            assert lease.meta.version == stat.version
        assert stat.created > 0
        assert stat.expires == 0

    def test_missing_key(self, tier: TierDriver) -> None:
        tier.put(JOB, "present", b"x")
        for job, key in ((JOB, "absent"), (OTHER_JOB, "present"), ("never-seen", "k")):
            assert not tier.exists(job, key)
            with pytest.raises(NotFoundError):
                tier.get(job, key)
            with pytest.raises(NotFoundError):
                tier.stat(job, key)
            with pytest.raises(NotFoundError):
                tier.lease(job, key)

    def test_jobs_are_separate_namespaces(self, tier: TierDriver) -> None:
        tier.put(JOB, "same", b"from a")
        tier.put(OTHER_JOB, "same", b"from b")
        assert tier.get(JOB, "same") == b"from a"
        assert tier.get(OTHER_JOB, "same") == b"from b"
        assert tier.delete(JOB, "same")
        assert tier.get(OTHER_JOB, "same") == b"from b"

    def test_overwrite_replaces_value_and_frees_old_space(self, tier: TierDriver) -> None:
        small, big = _value(100, 2), _value(100_000, 3)
        self.put(tier, JOB, "k", small)
        used_small = tier.stats().used
        assert used_small == self.charge(tier, len(small))
        self.put(tier, JOB, "k", big)
        assert tier.get(JOB, "k") == big
        stats = tier.stats()
        assert stats.objects == 1
        assert stats.used == self.charge(tier, len(big))
        self.put(tier, JOB, "k", small)
        assert tier.get(JOB, "k") == small
        stats = tier.stats()
        assert stats.objects == 1
        assert stats.used == used_small
        assert tier.list(JOB) == (["k"], False)

    def test_delete(self, tier: TierDriver) -> None:
        self.put(tier, JOB, "k", b"value")
        self.put(tier, JOB, "keep", b"kept")
        assert tier.delete(JOB, "k") is True
        assert not tier.exists(JOB, "k")
        with pytest.raises(NotFoundError):
            tier.get(JOB, "k")
        assert tier.delete(JOB, "k") is False
        assert tier.delete(JOB, "never-stored") is False
        assert tier.delete("no-such-job", "k") is False
        assert tier.get(JOB, "keep") == b"kept"
        assert tier.stats().used == self.charge(tier, 4)

    def test_zero_length_value(self, tier: TierDriver) -> None:
        meta = self.put(tier, JOB, "empty", b"")
        assert meta.size == 0
        assert tier.get(JOB, "empty") == b""
        assert tier.exists(JOB, "empty")
        assert tier.stat(JOB, "empty").size == 0
        with tier.lease(JOB, "empty") as lease:
            assert sum(len(b) for b in lease.buffers) == 0
            assert lease.tobytes() == b""
        assert tier.list(JOB) == (["empty"], False)
        assert tier.stats().objects == 1
        assert tier.delete(JOB, "empty")
        assert tier.stats().used == 0

    # -- leases -------------------------------------------------------------------------------
    def test_lease_buffers_hold_the_value(self, tier: TierDriver) -> None:
        data = _value(50_000, 4)
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
        data = _value(20_000, 5)
        self.put(tier, JOB, "k", data)
        charged = tier.stats().used
        first = tier.lease(JOB, "k")
        second = tier.lease(JOB, "k")
        assert tier.delete(JOB, "k")
        assert not tier.exists(JOB, "k")
        # Other values written meanwhile must not land in the leased space.
        for i in range(8):
            self.put(tier, JOB, f"other{i}", _value(20_000, 100 + i))
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
            assert tier.get(JOB, f"other{i}") == _value(20_000, 100 + i)

    def test_lease_survives_overwrite(self, tier: TierDriver) -> None:
        old, new = _value(30_000, 6), _value(30_000, 7)
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
        data = _value(10_000, 8)
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
        small, large = _value(100, 12), _value(5000, 13)
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
        data = _value(300, 14)
        self.put(tier, JOB, "k", data)
        got = tier.read_small(JOB, "k", 1000, take=True)
        assert got is not None
        assert got[1] == data
        assert not tier.exists(JOB, "k")
        assert tier.stats().used == 0
        with pytest.raises(NotFoundError):
            tier.read_small(JOB, "k", 1000, take=True)

    # -- listing and bulk deletes -------------------------------------------------------------
    def test_list_sorted_with_prefix(self, tier: TierDriver) -> None:
        keys = [f"a/{i:03d}" for i in range(40)] + [f"b/{i}" for i in range(5)] + ["a", "ab"]
        for key in random.Random(9).sample(keys, len(keys)):
            tier.put(JOB, key, key.encode())
        tier.put(OTHER_JOB, "a/other-job", b"x")
        assert tier.list(JOB) == (sorted(keys), False)
        assert tier.list(JOB, "a/") == (sorted(k for k in keys if k.startswith("a/")), False)
        assert tier.list(JOB, "a") == (sorted(k for k in keys if k.startswith("a")), False)
        assert tier.list(JOB, "b/") == ([f"b/{i}" for i in range(5)], False)
        assert tier.list(JOB, "zzz") == ([], False)
        assert tier.list("no-such-job") == ([], False)
        assert tier.list(OTHER_JOB) == (["a/other-job"], False)

    def test_list_pages_with_after_and_limit(self, tier: TierDriver) -> None:
        keys = sorted(f"p/{i:03d}" for i in range(25))
        for key in keys:
            tier.put(JOB, key, b"v")
        tier.put(JOB, "q/after-the-prefix", b"v")
        tier.put(JOB, "o/before-the-prefix", b"v")
        pages: list[list[str]] = []
        after = ""
        while True:
            page, more = tier.list(JOB, "p/", after, 7)
            assert len(page) <= 7
            pages.append(page)
            if not more:
                break
            assert len(page) == 7
            after = page[-1]
        assert [len(p) for p in pages] == [7, 7, 7, 4]
        assert [k for p in pages for k in p] == keys
        # A limit equal to what is left says no more follow.
        assert tier.list(JOB, "p/", "", 25) == (keys, False)
        assert tier.list(JOB, "p/", "", 24) == (keys[:24], True)
        # ``after`` need not be a stored key; it is exclusive.
        assert tier.list(JOB, "p/", "p/0105", 3) == (["p/011", "p/012", "p/013"], True)
        assert tier.list(JOB, "p/", "p/010", 2) == (["p/011", "p/012"], True)
        assert tier.list(JOB, "p/", keys[-1], 10) == ([], False)
        assert tier.list(JOB, "p/", "zzz", 10) == ([], False)
        # A cursor before the prefix starts at the prefix.
        assert tier.list(JOB, "p/", "a", 2) == (keys[:2], True)
        assert tier.list(JOB, "", "p/024", 10) == (["q/after-the-prefix"], False)

    def test_delete_prefix(self, tier: TierDriver) -> None:
        for i in range(10):
            tier.put(JOB, f"tmp/{i}", _value(1000, i))
            tier.put(JOB, f"keep/{i}", _value(1000, 50 + i))
        tier.put(OTHER_JOB, "tmp/0", b"other job")
        assert tier.delete_prefix(JOB, "tmp/") == 10
        assert tier.list(JOB, "tmp/") == ([], False)
        assert tier.list(JOB) == (sorted(f"keep/{i}" for i in range(10)), False)
        assert tier.get(OTHER_JOB, "tmp/0") == b"other job"
        assert tier.get(JOB, "keep/3") == _value(1000, 53)
        assert tier.delete_prefix(JOB, "tmp/") == 0
        assert tier.delete_prefix("no-such-job", "") == 0
        stats = tier.stats()
        assert stats.objects == 11
        assert stats.used_by_job[JOB] == 10 * self.charge(tier, 1000)
        assert tier.delete_prefix(JOB, "") == 10
        assert tier.stats().used == self.charge(tier, len(b"other job"))

    def test_delete_job(self, tier: TierDriver) -> None:
        for i in range(12):
            tier.put(JOB, f"k{i}", _value(2000, i))
        tier.put(OTHER_JOB, "k0", b"survivor")
        assert tier.delete_job(JOB) == 12
        assert tier.list(JOB) == ([], False)
        assert not tier.exists(JOB, "k0")
        assert tier.get(OTHER_JOB, "k0") == b"survivor"
        stats = tier.stats()
        assert JOB not in stats.used_by_job
        assert JOB not in stats.objects_by_job
        assert stats.objects == 1
        assert stats.used == self.charge(tier, len(b"survivor"))
        assert tier.delete_job(JOB) == 0
        # The job can be used again afterwards.
        tier.put(JOB, "k0", b"again")
        assert tier.get(JOB, "k0") == b"again"

    # -- accounting and capacity --------------------------------------------------------------
    def test_stats_accounting(self, tier: TierDriver) -> None:
        stats = tier.stats()
        assert stats.tier == tier.name
        assert stats.capacity == tier.capacity
        assert (stats.used, stats.objects, stats.peak_used) == (0, 0, 0)
        assert stats.used_by_job == {}
        sizes_a, sizes_b = [100, 5000, 70_000], [1, 64, 30_000, 200_000]
        for i, n in enumerate(sizes_a):
            tier.put(JOB, f"a{i}", _value(n, i))
        for i, n in enumerate(sizes_b):
            tier.put(OTHER_JOB, f"b{i}", _value(n, 10 + i))
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
            tier.put(JOB, "k1", _value(1000, 1))
            tier.put(JOB, "k2", _value(3000, 2))
            before = tier.stats()
            too_big = _value(tier.capacity + 1, 3)
            with pytest.raises(CapacityError):
                tier.reserve(tier.capacity + 1)
            with pytest.raises(CapacityError):
                tier.put(JOB, "k1", too_big)
            with pytest.raises(CapacityError):
                tier.put(JOB, "new", too_big)
            assert tier.get(JOB, "k1") == _value(1000, 1)
            assert tier.get(JOB, "k2") == _value(3000, 2)
            assert not tier.exists(JOB, "new")
            after = tier.stats()
            assert (after.used, after.objects, after.used_by_job) == (
                before.used, before.objects, before.used_by_job,
            )  # fmt: skip

    def test_overwrite_that_does_not_fit_keeps_the_old_value(self) -> None:
        with self.make_tier(self.small_capacity) as tier:
            size = tier.capacity * 5 // 8
            old, new = _value(size, 1), _value(size, 2)
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
                    tier.put(JOB, f"k{i:04d}", _value(size, i))
                    stored.append(f"k{i:04d}")
            assert stored, "a tier refused its first small value"
            assert len(stored) * size <= tier.capacity
            for i, key in enumerate(stored):
                assert tier.get(JOB, key) == _value(size, i)
            with pytest.raises(CapacityError):
                tier.put(JOB, "one-more", _value(size, 999))
            assert tier.delete(JOB, stored[3])
            tier.put(JOB, "one-more", _value(size, 999))
            assert tier.get(JOB, "one-more") == _value(size, 999)
            # Delete every other value, then everything: the freed space is usable again.
            for key in stored[::2]:
                tier.delete(JOB, key)
            tier.delete_job(JOB)
            assert tier.stats().used == 0
            big = _value(len(stored) * size, 7)
            tier.put(JOB, "big", big)
            assert tier.get(JOB, "big") == big

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
        _fill(res, _value(40_000, 1))
        tier.abort(res)
        stats = tier.stats()
        assert stats.used == base
        assert stats.objects == 1
        assert tier.list(JOB) == (["keep"], False)
        assert tier.get(JOB, "keep") == b"kept"

    def test_uncommitted_reservation_is_invisible(self, tier: TierDriver) -> None:
        data = _value(5000, 2)
        res = tier.reserve(len(data))
        _fill(res, data)
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
        _fill(res, b"new")
        assert tier.get(JOB, "k") == b"old"
        tier.commit(res, JOB, "k", checksum=checksum(b"new"))
        assert tier.get(JOB, "k") == b"new"

    def test_join_makes_one_object_of_the_parts(self, tier: TierDriver) -> None:
        sizes = [1000, 65_536, 3, 40_001, 0]
        parts = []
        for i, n in enumerate(sizes):
            res = tier.reserve(n)
            _fill(res, _value(n, 20 + i))
            parts.append(res)
        charged = sum(p.charged for p in parts)
        whole = b"".join(_value(n, 20 + i) for i, n in enumerate(sizes))
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

    # -- lifetimes ----------------------------------------------------------------------------
    def test_ttl_then_expire_removes_it(self, tier: TierDriver) -> None:
        data = _value(3000, 3)
        res = tier.reserve(len(data))
        _fill(res, data)
        now = time.time()
        meta = tier.commit(res, JOB, "k", checksum=checksum(data), ttl=60)
        assert now + 59 <= meta.expires <= time.time() + 61
        tier.put(JOB, "forever", b"no ttl")
        assert tier.expire(time.time()) == 0
        assert tier.get(JOB, "k") == data
        assert tier.expire(time.time() + 120) == 1
        assert not tier.exists(JOB, "k")
        assert tier.list(JOB) == (["forever"], False)
        assert tier.get(JOB, "forever") == b"no ttl"
        assert tier.stats().used == self.charge(tier, len(b"no ttl"))

    def test_expire_spares_a_value_that_replaced_an_expiring_one(self, tier: TierDriver) -> None:
        self.put(tier, JOB, "k", b"short-lived", ttl=60)
        self.put(tier, JOB, "k", b"permanent")
        self.put(tier, JOB, "d", b"short-lived", ttl=60)
        tier.delete(JOB, "d")
        self.put(tier, JOB, "d", b"permanent too")
        assert tier.expire(time.time() + 120) == 0
        assert tier.get(JOB, "k") == b"permanent"
        assert tier.get(JOB, "d") == b"permanent too"
        assert tier.stats().objects == 2

    def test_expired_object_is_invisible_before_it_is_reaped(self, tier: TierDriver) -> None:
        self.put(tier, JOB, "k", b"brief", ttl=0.001)
        time.sleep(0.05)
        assert not tier.exists(JOB, "k")
        with pytest.raises(NotFoundError):
            tier.get(JOB, "k")
        assert tier.list(JOB) == ([], False)
        tier.expire(time.time())
        assert tier.stats().used == 0

    # -- concurrency --------------------------------------------------------------------------
    def test_concurrent_use_keeps_accounting_exact(self, tier: TierDriver) -> None:
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(300):
                    key = f"k{rng.randrange(16)}"
                    op = rng.random()
                    if op < 0.5:
                        tier.put(JOB, key, _value(rng.randrange(1, 5000), rng.randrange(4)))
                    elif op < 0.8:
                        try:
                            with tier.lease(JOB, key, take=rng.random() < 0.3) as lease:
                                data = lease.tobytes()
                                assert checksum(data) == lease.meta.checksum
                        except NotFoundError:
                            pass
                    else:
                        tier.delete(JOB, key)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        keys, _ = tier.list(JOB)
        stats = tier.stats()
        assert stats.objects == len(keys)
        assert stats.used == sum(self.charge(tier, tier.stat(JOB, k).size) for k in keys)
        tier.delete_job(JOB)
        assert tier.stats().used == 0
