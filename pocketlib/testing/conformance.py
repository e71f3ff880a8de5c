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

from ..errors import NotFoundError
from ..protocol import checksum
from ..tiers.base import TierDriver
from .conformance_capacity import CapacityChecks
from .conformance_expiry import ExpiryChecks
from .conformance_kit import JOB, random_value
from .conformance_leases import LeaseChecks
from .conformance_listing import ListingChecks
from .conformance_objects import ObjectChecks
from .conformance_writes import WriteChecks

__all__ = ["TierConformance"]


# pytest runs inherited tests base class first (reverse MRO): the parts are listed last to first
# so that they run in the order objects, leases, listing, capacity, writes, expiry, then the
# concurrency test below.
class TierConformance(
    ExpiryChecks, WriteChecks, CapacityChecks, ListingChecks, LeaseChecks, ObjectChecks
):
    """Base class of a driver's conformance tests; implement :meth:`make_tier`.

    The tests come from the parts of the suite, one ``conformance_*`` module each; the one here
    mixes their operations from four threads.
    """

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
                        tier.put(JOB, key, random_value(rng.randrange(1, 5000), rng.randrange(4)))
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
