"""Tier conformance, listing and bulk deletes: sorted listing by prefix, paging with ``after``
and ``limit``, ``delete_prefix`` and ``delete_job``."""

from __future__ import annotations

import random

from ..tiers.base import TierDriver
from .conformance_kit import JOB, OTHER_JOB, TierChecks, random_value

__all__ = ["ListingChecks"]


class ListingChecks(TierChecks):
    """What a tier lists, and what a bulk delete removes."""

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
            tier.put(JOB, f"tmp/{i}", random_value(1000, i))
            tier.put(JOB, f"keep/{i}", random_value(1000, 50 + i))
        tier.put(OTHER_JOB, "tmp/0", b"other job")
        assert tier.delete_prefix(JOB, "tmp/") == 10
        assert tier.list(JOB, "tmp/") == ([], False)
        assert tier.list(JOB) == (sorted(f"keep/{i}" for i in range(10)), False)
        assert tier.get(OTHER_JOB, "tmp/0") == b"other job"
        assert tier.get(JOB, "keep/3") == random_value(1000, 53)
        assert tier.delete_prefix(JOB, "tmp/") == 0
        assert tier.delete_prefix("no-such-job", "") == 0
        stats = tier.stats()
        assert stats.objects == 11
        assert stats.used_by_job[JOB] == 10 * self.charge(tier, 1000)
        assert tier.delete_prefix(JOB, "") == 10
        assert tier.stats().used == self.charge(tier, len(b"other job"))

    def test_delete_job(self, tier: TierDriver) -> None:
        for i in range(12):
            tier.put(JOB, f"k{i}", random_value(2000, i))
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
