"""Tier conformance, basic object operations: put and get, metadata and versions, missing keys,
jobs as namespaces, overwrite, delete and the empty value."""

from __future__ import annotations

import pytest

from ..errors import NotFoundError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_kit import JOB, OTHER_JOB, TierChecks, random_value

__all__ = ["ObjectChecks"]


class ObjectChecks(TierChecks):
    """What a tier does with single objects."""

    # -- basic object operations --------------------------------------------------------------
    def test_put_get_roundtrip(self, tier: TierDriver) -> None:
        values = {f"k{n}": random_value(n, seed=1) for n in (1, 7, 63, 64, 65, 1000, 4096, 100_003)}
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
        small, big = random_value(100, 2), random_value(100_000, 3)
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
