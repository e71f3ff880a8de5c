"""Persist after job: objects put with ``persist=True`` are written through to a durable tier.

``pocket node --tier dram --capacity 8GiB --persist s3:1TiB:s3://bucket/pocket`` wraps the node's
tier (or chain) so that a put flagged PERSIST is committed on the fast tier and, before it is
acknowledged, written through to the persist tier (S3 in production; any persistent tier
works). If the write-through fails, the put fails and the fast copy is removed: an
acknowledged persisted put is in both places.

Deleting a job's data (``Job.purge()``) frees its objects on the fast tier only; persisted
objects outlive it and are still served, from the persist tier, to the job when it is opened
again, and listed with its other keys. Deleting a key (or a prefix) deletes it everywhere.
"""

from __future__ import annotations

import heapq
import itertools

from ..errors import NotFoundError
from ..protocol import Flag
from .base import Lease, ObjectMeta, Reservation, TierDriver, TierStats

__all__ = ["PersistingTier"]


class PersistingTier(TierDriver):
    """``main`` for everything; ``persist`` also holds what was put with Flag.PERSIST."""

    name = "persisting"

    def __init__(self, main: TierDriver, persist: TierDriver) -> None:
        self.main = main
        self.persist = persist
        self.capabilities = main.capabilities  # type: ignore[misc]

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        from ..errors import ConfigError

        raise ConfigError("a persisting tier is built from --tier and --persist options")

    @property
    def capacity(self) -> int:
        return self.main.capacity

    # -- writes -------------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> Reservation:
        return self.main.reserve(nbytes)

    def abort(self, res: Reservation) -> None:
        self.main.abort(res)

    def join(self, parts: list[Reservation]) -> Reservation:
        return self.main.join(parts)

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
        meta = self.main.commit(res, job, key, checksum=checksum, flags=flags, ttl=ttl)
        if flags & Flag.PERSIST:
            with self.main.lease(job, key) as lease:
                self._write_through(job, key, lease.tobytes(), meta, ttl)
        return meta

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
        meta = self.main.put(job, key, data, checksum=checksum, flags=flags, ttl=ttl)
        if flags & Flag.PERSIST:
            self._write_through(job, key, data, meta, ttl)
        return meta

    def _write_through(
        self,
        job: str,
        key: str,
        data: bytes | bytearray | memoryview,
        meta: ObjectMeta,
        ttl: float | None,
    ) -> None:
        try:
            self.persist.put(job, key, data, checksum=meta.checksum, flags=meta.flags, ttl=ttl)
        except BaseException:
            self.main.delete(job, key)  # an acknowledged persisted put is in both places
            raise

    # -- reads: the fast tier first, then what was persisted ----------------------------------
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        try:
            return self.main.lease(job, key, take=take)
        except NotFoundError:
            return self.persist.lease(job, key, take=take)

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        try:
            return self.main.read_small(job, key, limit, take=take)
        except NotFoundError:
            return self.persist.read_small(job, key, limit, take=take)

    def stat(self, job: str, key: str) -> ObjectMeta:
        try:
            return self.main.stat(job, key)
        except NotFoundError:
            return self.persist.stat(job, key)

    def delete(self, job: str, key: str) -> bool:
        return any([self.main.delete(job, key), self.persist.delete(job, key)])

    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        pages = [t.list(job, prefix, after, limit) for t in (self.main, self.persist)]
        merged = [k for k, _ in itertools.groupby(heapq.merge(*(keys for keys, _ in pages)))]
        return merged[:limit], len(merged) > limit or any(more for _, more in pages)

    def delete_prefix(self, job: str, prefix: str) -> int:
        main = set(self.main.list(job, prefix, limit=1 << 62)[0])
        persisted = set(self.persist.list(job, prefix, limit=1 << 62)[0])
        self.main.delete_prefix(job, prefix)
        self.persist.delete_prefix(job, prefix)
        return len(main | persisted)

    def delete_job(self, job: str) -> int:
        return self.main.delete_job(job)  # persisted objects outlive the job

    def expire(self, now: float) -> int:
        return self.main.expire(now) + self.persist.expire(now)

    def stats(self) -> TierStats:
        main, persist = self.main.stats(), self.persist.stats()
        counters = {**main.counters, **{f"persist.{k}": v for k, v in persist.counters.items()}}
        counters["persist.objects"] = persist.objects
        counters["persist.used"] = persist.used
        return TierStats(
            tier=main.tier, capacity=main.capacity, used=main.used, peak_used=main.peak_used,
            objects=main.objects, used_by_job=main.used_by_job,
            objects_by_job=main.objects_by_job, counters=counters,
            parts=[*(main.parts or [main]), persist],
        )  # fmt: skip

    def close(self) -> None:
        self.main.close()
        self.persist.close()
