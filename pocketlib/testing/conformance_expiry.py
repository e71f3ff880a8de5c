"""Tier conformance, lifetimes: a value's TTL, ``expire`` reaping it, and expired values hidden
before they are reaped."""

from __future__ import annotations

import time

import pytest

from ..errors import NotFoundError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_kit import JOB, TierChecks, fill, random_value

__all__ = ["ExpiryChecks"]


class ExpiryChecks(TierChecks):
    """What a tier does with values that have a lifetime."""

    # -- lifetimes ----------------------------------------------------------------------------
    def test_ttl_then_expire_removes_it(self, tier: TierDriver) -> None:
        data = random_value(3000, 3)
        res = tier.reserve(len(data))
        fill(res, data)
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
