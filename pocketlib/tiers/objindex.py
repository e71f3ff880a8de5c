"""ObjectIndex: the in-memory index of what a tier stores, shared by every driver.

It keeps job -> key -> :class:`Entry` (the object's metadata, where the driver put it, the
bytes it is charged, a count of leases and a dead flag), a lazily sorted key list per job for
paged LIST, per-job and total accounting, and a heap of TTL expiries. A driver supplies the
location (extents of a mapping, a file name, an S3 object name) and what to do when an entry's
space may be given back (``on_free``) or when an entry is deleted (``on_remove``).

The index takes no lock: every method is called with the driver's lock held, so a driver
decides what else that lock covers (its allocator) and what is done outside it (I/O).

Deleting or overwriting an entry that is leased only unlinks it; ``on_free`` runs when the
last lease is released, so a reader never sees bytes of a later value.
"""

from __future__ import annotations

import heapq
import os
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import NotFoundError
from .base import ObjectMeta, TierStats

__all__ = ["Entry", "JobIndex", "ObjectIndex"]

L = TypeVar("L")


@dataclass(slots=True, eq=False)
class Entry(Generic[L]):
    """One stored object: ``loc`` says where the driver keeps it."""

    meta: ObjectMeta
    loc: L
    charged: int
    job: str
    key: str
    refs: int = 0
    dead: bool = False


class JobIndex:
    """One job's objects, with a lazily sorted key list for paged LIST."""

    __slots__ = ("objects", "sorted_keys", "used")

    def __init__(self) -> None:
        self.objects: dict[str, Entry[Any]] = {}
        self.sorted_keys: list[str] | None = None
        self.used = 0


class ObjectIndex(Generic[L]):
    """The objects of a tier of ``capacity`` bytes (every method: the driver's lock held).

    ``used`` counts every charged byte, reservations included (the driver charges those
    itself); ``on_free(entry)`` is called once an entry is neither indexed nor leased, after
    its charge is taken off ``used``; ``on_remove(entry)`` before an entry is deleted (not
    when it is replaced: :meth:`insert` returns the entry it replaced).
    """

    __slots__ = ("capacity", "expiry", "jobs", "objects", "on_free", "on_remove", "peak", "used",
                 "version")  # fmt: skip

    def __init__(
        self,
        capacity: int,
        *,
        on_free: Callable[[Entry[L]], None] | None = None,
        on_remove: Callable[[Entry[L]], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.jobs: dict[str, JobIndex] = {}
        self.expiry: list[tuple[float, int, str, str]] = []
        self.used = 0
        self.peak = 0
        self.objects = 0
        #: The last version handed out. It starts at a random point (below 2**55, so a chain
        #: of tiers may still scale it) so that two nodes' versions do not collide: a read
        #: pinned to a version then names one value, whichever node it asks.
        self.version = int.from_bytes(os.urandom(7)) >> 1
        self.on_free = on_free
        self.on_remove = on_remove

    # -- lookups ------------------------------------------------------------------------------
    def get(self, job: str, key: str) -> Entry[L] | None:
        """The entry of ``key``, expired or not."""
        index = self.jobs.get(job)
        return index.objects.get(key) if index else None

    def find(self, job: str, key: str, *, drop_expired: bool = True) -> Entry[L]:
        """The live entry of ``key``; NotFoundError if there is none (an expired one is
        removed first, if ``drop_expired``)."""
        index = self.jobs.get(job)
        stored = index.objects.get(key) if index else None
        if stored is None:
            raise NotFoundError(f"no object {key!r} in job {job!r}")
        if stored.meta.expires and stored.meta.expires <= time.time():
            if drop_expired:
                self.remove(job, key)
            raise NotFoundError(f"object {key!r} in job {job!r} expired")
        return stored

    def keys(self, job: str, prefix: str = "") -> list[str]:
        """The keys of ``job`` that start with ``prefix`` (in no order)."""
        index = self.jobs.get(job)
        if index is None:
            return []
        return [k for k in index.objects if k.startswith(prefix)] if prefix else list(index.objects)

    def entries(self) -> list[Entry[L]]:
        """Every indexed entry."""
        return [s for index in self.jobs.values() for s in index.objects.values()]

    # -- changes ------------------------------------------------------------------------------
    def charge(self, charged: int) -> None:
        """Count ``charged`` more bytes as used."""
        self.used += charged
        if self.used > self.peak:
            self.peak = self.used

    def insert(self, stored: Entry[L]) -> Entry[L] | None:
        """Index ``stored`` (its charge already counted in ``used``); returns the entry it
        replaced, which is unlinked (and freed, unless leased)."""
        job = stored.job
        index = self.jobs.get(job)
        if index is None:
            index = self.jobs[job] = JobIndex()
        key = stored.key
        old = index.objects.get(key)
        if old is None:
            index.sorted_keys = None
        else:
            self._unlink(index, old)
        self.objects += 1
        index.objects[key] = stored
        index.used += stored.charged
        if stored.meta.expires:
            heapq.heappush(self.expiry, (stored.meta.expires, stored.meta.version, job, key))
        return old

    def remove(self, job: str, key: str) -> Entry[L]:
        """Delete ``key`` (it must be indexed): ``on_remove``, then unlink it."""
        index = self.jobs[job]
        stored = index.objects[key]
        if self.on_remove is not None:
            self.on_remove(stored)
        del index.objects[key]
        index.sorted_keys = None
        self._unlink(index, stored)
        return stored

    def discard(self, stored: Entry[L]) -> bool:
        """Unlink ``stored`` if it is still indexed (without ``on_remove``)."""
        index = self.jobs.get(stored.job)
        if index is None or index.objects.get(stored.key) is not stored:
            return False
        del index.objects[stored.key]
        index.sorted_keys = None
        self._unlink(index, stored)
        return True

    def release(self, stored: Entry[L]) -> None:
        """A lease of ``stored`` is given back."""
        stored.refs -= 1
        if stored.dead and stored.refs == 0:
            self._free(stored)

    def _unlink(self, index: JobIndex, stored: Entry[L]) -> None:
        index.used -= stored.charged
        self.objects -= 1
        stored.dead = True
        if stored.refs == 0:
            self._free(stored)

    def _free(self, stored: Entry[L]) -> None:
        self.used -= stored.charged
        if self.on_free is not None:
            self.on_free(stored)

    # -- the TierDriver operations over the index ---------------------------------------------
    def page(
        self, job: str, prefix: str, after: str, limit: int, now: float
    ) -> tuple[list[str], bool]:
        """A page of live keys of ``job`` (see :meth:`TierDriver.list`)."""
        index = self.jobs.get(job)
        if index is None:
            return [], False
        if index.sorted_keys is None:
            index.sorted_keys = sorted(index.objects)
        keys = index.sorted_keys
        i = bisect_right(keys, after) if after >= prefix else bisect_left(keys, prefix)
        out: list[str] = []
        while i < len(keys) and keys[i].startswith(prefix):
            stored = index.objects.get(keys[i])
            if stored is not None and not (stored.meta.expires and stored.meta.expires <= now):
                if len(out) == limit:
                    return out, True
                out.append(keys[i])
            i += 1
        return out, False

    def delete_prefix(self, job: str, prefix: str) -> int:
        doomed = self.keys(job, prefix)
        for key in doomed:
            self.remove(job, key)
        return len(doomed)

    def delete_job(self, job: str) -> int:
        if job not in self.jobs:
            return 0
        doomed = self.keys(job)
        for key in doomed:
            self.remove(job, key)
        del self.jobs[job]
        return len(doomed)

    def drop_job_if_empty(self, job: str) -> None:
        index = self.jobs.get(job)
        if index is not None and not index.objects:
            del self.jobs[job]

    def due(self, now: float) -> list[Entry[L]]:
        """Take the expiries due by ``now`` off the heap: the entries they still apply to."""
        out: list[Entry[L]] = []
        expiry = self.expiry
        while expiry and expiry[0][0] <= now:
            _, version, job, key = heapq.heappop(expiry)
            stored = self.get(job, key)
            if stored is not None and stored.meta.version == version:
                out.append(stored)
        return out

    def expire(self, now: float) -> int:
        """Delete what expired by ``now``; returns the count."""
        count = 0
        expiry = self.expiry
        while expiry and expiry[0][0] <= now:
            _, version, job, key = heapq.heappop(expiry)
            stored = self.get(job, key)
            if stored is not None and stored.meta.version == version:
                self.remove(job, key)
                count += 1
        return count

    def stats(self, tier: str, counters: dict[str, int] | None = None) -> TierStats:
        jobs = self.jobs.items()
        return TierStats(
            tier=tier,
            capacity=self.capacity,
            used=self.used,
            peak_used=self.peak,
            objects=self.objects,
            used_by_job={j: ix.used for j, ix in jobs if ix.objects},
            objects_by_job={j: len(ix.objects) for j, ix in jobs if ix.objects},
            counters=counters if counters is not None else {},
        )


class IndexAnswers:
    """The TierDriver methods answered from an :class:`ObjectIndex` alone, under the
    driver's lock: mixed into drivers before TierDriver (the DRAM/NVMe and HDD tiers)."""

    _index: ObjectIndex[Any]
    #: The driver's lock (any context manager) that guards its index.
    _index_guard: AbstractContextManager[Any]

    def stat(self, job: str, key: str) -> ObjectMeta:
        with self._index_guard:
            return self._index.find(job, key).meta

    def delete(self, job: str, key: str) -> bool:
        with self._index_guard:
            if self._index.get(job, key) is None:
                return False
            self._index.remove(job, key)
            return True

    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        now = time.time()
        with self._index_guard:
            return self._index.page(job, prefix, after, limit, now)

    def delete_prefix(self, job: str, prefix: str) -> int:
        with self._index_guard:
            return self._index.delete_prefix(job, prefix)

    def delete_job(self, job: str) -> int:
        with self._index_guard:
            return self._index.delete_job(job)

    def expire(self, now: float) -> int:
        with self._index_guard:
            return self._index.expire(now)
