"""A chain of tiers served as one: puts spill down to the first tier with room.

``pocket node --tier dram --capacity 1GiB --spill nvme:/mnt/nvme:8GiB`` serves a chain. A put
reserves space on the first tier that has room, so a full DRAM tier passes it to NVMe, NVMe to
HDD, and so on; only a chain full at every level refuses it (CapacityError, and nothing already
stored is touched). A key lives on one tier at a time: committing it on one tier deletes it
from the others, after the commit, so it never disappears in between. Reads look the key up
tier by tier, so clients need no change.

Versions are made unique across the chain (``tier version * n + tier index``), so a reader
pinned to a version notices when the object moves to another tier by being overwritten.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Sequence

from ..errors import CapacityError, ConfigError, NotFoundError
from .base import Capabilities, Lease, ObjectMeta, Reservation, TierDriver, TierStats

__all__ = ["ChainTier"]

_LOCK_STRIPES = 64


class ChainTier(TierDriver):
    """Tiers tried in order for every put; the first is the fastest and smallest."""

    name = "chain"
    capabilities = Capabilities(shared_memory=False, persistent=False, zero_copy=False)

    def __init__(self, tiers: Sequence[TierDriver]) -> None:
        if not tiers:
            raise ConfigError("a tier chain needs at least one tier")
        self.tiers = list(tiers)
        # Commits of one key on two tiers must not interleave with each other's cleanup.
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._spilled = [0] * len(self.tiers)

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        raise ConfigError("a chain is built from --tier and --spill options")

    @property
    def capacity(self) -> int:
        return sum(t.capacity for t in self.tiers)

    # -- versions -----------------------------------------------------------------------------
    def _meta(self, meta: ObjectMeta, i: int) -> ObjectMeta:
        return meta._replace(version=meta.version * len(self.tiers) + i)

    def _stripe(self, job: str, key: str) -> threading.Lock:
        return self._stripes[hash((job, key)) % _LOCK_STRIPES]

    # -- write path ---------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> Reservation:
        refusals = []
        for i, tier in enumerate(self.tiers):
            try:
                inner = tier.reserve(nbytes)
            except CapacityError as exc:
                refusals.append(f"{tier.name}: {exc}")
                continue
            if i:
                self._spilled[i] += 1
            return Reservation(inner.size, inner.buffers, inner.charged, (i, inner))
        raise CapacityError("every tier of the chain is full (" + "; ".join(refusals) + ")")

    def commit(
        self,
        res: Reservation,
        job: str,
        key: str,
        *,
        checksum: int,
        flags: int = 0,
        ttl: float | None = None,
    ) -> ObjectMeta:
        i, inner = res.loc
        res.done = True
        with self._stripe(job, key):
            meta = self.tiers[i].commit(inner, job, key, checksum=checksum, flags=flags, ttl=ttl)
            self._drop_elsewhere(job, key, i)
        return self._meta(meta, i)

    def put(
        self,
        job: str,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        checksum: int | None = None,
        flags: int = 0,
        ttl: float | None = None,
    ) -> ObjectMeta:
        refusals = []
        for i, tier in enumerate(self.tiers):
            with self._stripe(job, key):
                try:
                    meta = tier.put(job, key, data, checksum=checksum, flags=flags, ttl=ttl)
                except CapacityError as exc:
                    refusals.append(f"{tier.name}: {exc}")
                    continue
                self._drop_elsewhere(job, key, i)
            if i:
                self._spilled[i] += 1
            return self._meta(meta, i)
        raise CapacityError("every tier of the chain is full (" + "; ".join(refusals) + ")")

    def _drop_elsewhere(self, job: str, key: str, keep: int) -> None:
        for j, tier in enumerate(self.tiers):
            if j != keep:
                tier.delete(job, key)

    def abort(self, res: Reservation) -> None:
        if res.done:
            return
        res.done = True
        i, inner = res.loc
        self.tiers[i].abort(inner)

    def join(self, parts: list[Reservation]) -> Reservation:
        # Parts of one value may have landed on different tiers as they filled up; a value
        # lives on one tier, so parts on later tiers are copied to the tier of the largest part.
        if any(p.done for p in parts):
            raise ValueError("reservation already committed or aborted")
        by_tier: dict[int, list[Reservation]] = {}
        for p in parts:
            by_tier.setdefault(p.loc[0], []).append(p.loc[1])
        for p in parts:
            p.done = True
        if len(by_tier) == 1:
            ((i, inners),) = by_tier.items()
            inner = self.tiers[i].join(inners)
            return Reservation(inner.size, inner.buffers, inner.charged, (i, inner))
        total = sum(p.size for p in parts)
        try:
            whole = self.reserve(total)
        except CapacityError:
            for p in parts:
                self.tiers[p.loc[0]].abort(p.loc[1])
            raise
        pos = 0
        targets = whole.buffers
        for p in parts:
            for src in p.buffers:
                _copy_into(targets, pos, src)
                pos += len(src)
            self.tiers[p.loc[0]].abort(p.loc[1])
        return whole

    # -- read path ----------------------------------------------------------------------------
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        for i, tier in enumerate(self.tiers):
            try:
                lease = tier.lease(job, key, take=take)
            except NotFoundError:
                continue
            lease.meta = self._meta(lease.meta, i)
            return lease
        raise NotFoundError(f"no object {key!r} in job {job!r}")

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        for i, tier in enumerate(self.tiers):
            try:
                got = tier.read_small(job, key, limit, take=take)
            except NotFoundError:
                continue
            return None if got is None else (self._meta(got[0], i), got[1])
        raise NotFoundError(f"no object {key!r} in job {job!r}")

    def stat(self, job: str, key: str) -> ObjectMeta:
        for i, tier in enumerate(self.tiers):
            try:
                return self._meta(tier.stat(job, key), i)
            except NotFoundError:
                continue
        raise NotFoundError(f"no object {key!r} in job {job!r}")

    def delete(self, job: str, key: str) -> bool:
        with self._stripe(job, key):
            return any([tier.delete(job, key) for tier in self.tiers])

    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        pages = [tier.list(job, prefix, after, limit) for tier in self.tiers]
        merged = [k for k, _ in itertools.groupby(heapq.merge(*(keys for keys, _ in pages)))]
        more = len(merged) > limit or any(m for _, m in pages)
        return merged[:limit], more

    def delete_prefix(self, job: str, prefix: str) -> int:
        return sum(tier.delete_prefix(job, prefix) for tier in self.tiers)

    def delete_job(self, job: str) -> int:
        return sum(tier.delete_job(job) for tier in self.tiers)

    def expire(self, now: float) -> int:
        return sum(tier.expire(now) for tier in self.tiers)

    def stats(self) -> TierStats:
        parts = [tier.stats() for tier in self.tiers]
        used_by_job: dict[str, int] = {}
        objects_by_job: dict[str, int] = {}
        counters: dict[str, int] = {}
        for i, st in enumerate(parts):
            for job, n in st.used_by_job.items():
                used_by_job[job] = used_by_job.get(job, 0) + n
            for job, n in st.objects_by_job.items():
                objects_by_job[job] = objects_by_job.get(job, 0) + n
            counters[f"{i}.{st.tier}.spilled_puts"] = self._spilled[i]
            for name, n in st.counters.items():
                counters[f"{i}.{st.tier}.{name}"] = n
        return TierStats(
            tier=self.name,
            capacity=sum(st.capacity for st in parts),
            used=sum(st.used for st in parts),
            peak_used=sum(st.peak_used for st in parts),
            objects=sum(st.objects for st in parts),
            used_by_job=used_by_job,
            objects_by_job=objects_by_job,
            counters=counters,
            parts=parts,
        )

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()


def _copy_into(targets: list[memoryview], pos: int, src: memoryview) -> None:
    """Copy ``src`` into the concatenation of ``targets`` at offset ``pos``."""
    offset = 0
    for t in targets:
        if pos < offset + len(t) and len(src):
            start = pos - offset
            n = min(len(t) - start, len(src))
            t[start : start + n] = src[:n]
            src = src[n:]
            pos += n
        offset += len(t)
