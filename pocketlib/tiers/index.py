"""IndexedTier: the bookkeeping shared by tiers that hold values in addressable memory.

It keeps, under one lock, the per-job index of objects, lease reference counts, TTL expiry and
per-job accounting. A subclass supplies only the medium: how to allocate and free space and how
to view it as buffers (DRAM: a shared-memory arena; NVMe: a mapped file).

Deleting or overwriting an object that is leased only unlinks it; its space is freed when the
last lease is released, so a reader never sees bytes of a later value.
"""

from __future__ import annotations

import abc
import functools
import heapq
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CapacityError, NotFoundError
from ..protocol import checksum as value_checksum
from .base import Lease, ObjectMeta, Reservation, TierDriver, TierStats

__all__ = ["IndexedTier"]

# Builds an ObjectMeta from a tuple in C (a NamedTuple's __new__ is a Python function).
_new_meta = functools.partial(tuple.__new__, ObjectMeta)


@dataclass(slots=True)
class _Stored:
    meta: ObjectMeta
    loc: Any
    charged: int
    job: str
    refs: int = 0
    dead: bool = False


class _JobIndex:
    """One job's objects, with a lazily sorted key list for paged LIST."""

    __slots__ = ("objects", "sorted_keys", "used")

    def __init__(self) -> None:
        self.objects: dict[str, _Stored] = {}
        self.sorted_keys: list[str] | None = None
        self.used = 0


class IndexedTier(TierDriver):
    """A TierDriver over an allocatable medium; subclasses implement the ``_medium_*`` hooks."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _JobIndex] = {}
        self._expiry: list[tuple[float, int, str, str]] = []
        self._version = 0
        self._capacity = capacity
        self._used = 0
        self._peak = 0
        self._objects = 0

    # -- medium hooks (called with the lock held) --------------------------------------------
    @abc.abstractmethod
    def _medium_allocate(self, nbytes: int) -> tuple[Any, int] | None:
        """Space for ``nbytes``: ``(loc, charged_bytes)``, or None if it does not fit."""

    @abc.abstractmethod
    def _medium_free(self, loc: Any, nbytes: int) -> None:
        """Give space back."""

    @abc.abstractmethod
    def _medium_join(self, locs: list[Any]) -> Any:
        """One location made of several, in order."""

    @abc.abstractmethod
    def _medium_buffers(self, loc: Any, nbytes: int, writable: bool) -> list[memoryview]:
        """Buffers over the space, in value order."""

    # -- TierDriver ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    def reserve(self, nbytes: int) -> Reservation:
        if nbytes < 0:
            raise ValueError("negative size")
        with self._lock:
            loc, charged = self._take_space(nbytes)
        return Reservation(nbytes, self._medium_buffers(loc, nbytes, True), charged, loc)

    def _take_space(self, nbytes: int) -> tuple[Any, int]:
        """Allocate and charge space (lock held); CapacityError if it is not there."""
        free = self._capacity - self._used
        got = self._medium_allocate(nbytes) if nbytes <= free else None
        if got is None:
            raise CapacityError(
                f"{self.name} tier is full: {nbytes} bytes requested, "
                f"{free} of {self._capacity} free"
            )
        loc, charged = got
        self._used += charged
        if self._used > self._peak:
            self._peak = self._used
        return loc, charged

    def abort(self, res: Reservation) -> None:
        with self._lock:
            if res.done:
                return
            res.done = True
            self._free_space(res.loc, res.size, res.charged)

    def join(self, parts: list[Reservation]) -> Reservation:
        if any(p.done for p in parts):
            raise ValueError("reservation already committed or aborted")
        for p in parts:
            p.done = True
        loc = self._medium_join([p.loc for p in parts])
        buffers = [b for p in parts for b in p.buffers]
        return Reservation(sum(p.size for p in parts), buffers, sum(p.charged for p in parts), loc)

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
        now = time.time()
        with self._lock:
            if res.done:
                raise ValueError("reservation already committed or aborted")
            res.done = True
            return self._publish(
                job, key, res.loc, res.size, res.charged, checksum, flags, now, ttl
            )

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
        """Reserve, copy and commit under one lock: the path of small values."""
        if checksum is None:
            checksum = value_checksum(data)
        nbytes = len(data)
        now = time.time()
        with self._lock:
            loc, charged = self._take_space(nbytes)
            bufs = self._medium_buffers(loc, nbytes, True)
            if len(bufs) == 1:
                bufs[0][:] = data
            else:
                Reservation(nbytes, bufs, charged).fill(data)
            return self._publish(job, key, loc, nbytes, charged, checksum, flags, now, ttl)

    def _publish(
        self,
        job: str,
        key: str,
        loc: Any,
        size: int,
        charged: int,
        checksum: int,
        flags: int,
        now: float,
        ttl: float | None,
    ) -> ObjectMeta:
        """Make filled space visible as ``key`` (lock held)."""
        self._version += 1
        expires = now + ttl if ttl else 0.0
        meta = _new_meta((size, checksum, flags, self._version, now, expires))
        stored = _Stored(meta, loc, charged, job)
        try:
            # Recorded before the value it replaces is freed: a persistent tier that crashes
            # right after must find the new value, never the old one over reused space.
            self._record_put(job, key, stored)
        except BaseException:
            self._free_space(loc, size, charged)
            raise
        self._insert(job, key, stored)
        return meta

    def _insert(self, job: str, key: str, stored: _Stored) -> None:
        """Index ``stored`` as ``key``, unlinking what it replaces (lock held)."""
        index = self._jobs.get(job)
        if index is None:
            index = self._jobs[job] = _JobIndex()
        old = index.objects.get(key)
        if old is None:
            index.sorted_keys = None
        else:
            self._unlink(index, old)
        self._objects += 1
        index.objects[key] = stored
        index.used += stored.charged
        if stored.meta.expires:
            heapq.heappush(self._expiry, (stored.meta.expires, stored.meta.version, job, key))

    def _restore(self, job: str, key: str, meta: ObjectMeta, loc: Any, charged: int) -> None:
        """Index an object found on the medium at start (no record is written)."""
        with self._lock:
            self._insert(job, key, _Stored(meta, loc, charged, job))
            self._used += charged
            self._peak = max(self._peak, self._used)
            self._version = max(self._version, meta.version)

    # -- persistence hooks (lock held); a persistent tier records changes here ----------------
    def _record_put(self, job: str, key: str, stored: _Stored) -> None:
        """``key`` now names ``stored`` (it may replace an older object)."""

    def _record_delete(self, job: str, key: str, stored: _Stored) -> None:
        """``key`` (the object ``stored``) is gone."""

    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        with self._lock:
            stored = self._find(job, key)
            stored.refs += 1
            if take:
                self._remove(job, key)
        views = self._medium_buffers(stored.loc, stored.meta.size, False)
        return Lease(stored.meta, views, self._release, stored, stored.loc)

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        """Copy a small value out under the lock: no lease to take and give back."""
        with self._lock:
            stored = self._find(job, key)
            meta = stored.meta
            if meta.size > limit:
                return None
            views = self._medium_buffers(stored.loc, meta.size, False)
            data = views[0].tobytes() if len(views) == 1 else b"".join(views)
            if take:
                self._remove(job, key)
        return meta, data

    def stat(self, job: str, key: str) -> ObjectMeta:
        with self._lock:
            return self._find(job, key).meta

    def delete(self, job: str, key: str) -> bool:
        with self._lock:
            index = self._jobs.get(job)
            if index is None or key not in index.objects:
                return False
            self._remove(job, key)
            return True

    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        from bisect import bisect_left, bisect_right

        now = time.time()
        with self._lock:
            index = self._jobs.get(job)
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
        with self._lock:
            index = self._jobs.get(job)
            if index is None:
                return 0
            doomed = [k for k in index.objects if k.startswith(prefix)]
            for key in doomed:
                self._remove(job, key)
            return len(doomed)

    def delete_job(self, job: str) -> int:
        with self._lock:
            index = self._jobs.get(job)
            if index is None:
                return 0
            doomed = list(index.objects)
            for key in doomed:
                self._remove(job, key)
            del self._jobs[job]
            return len(doomed)

    def expire(self, now: float) -> int:
        count = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, version, job, key = heapq.heappop(self._expiry)
                index = self._jobs.get(job)
                stored = index.objects.get(key) if index else None
                if stored is not None and stored.meta.version == version:
                    self._remove(job, key)
                    count += 1
        return count

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                tier=self.name,
                capacity=self._capacity,
                used=self._used,
                peak_used=self._peak,
                objects=self._objects,
                used_by_job={j: ix.used for j, ix in self._jobs.items() if ix.objects},
                objects_by_job={j: len(ix.objects) for j, ix in self._jobs.items() if ix.objects},
                counters=self._counters(),
            )

    def _counters(self) -> dict[str, int]:
        """Driver-specific counters for :meth:`stats` (lock held)."""
        return {}

    # -- internals (lock held) ----------------------------------------------------------------
    def _find(self, job: str, key: str) -> _Stored:
        index = self._jobs.get(job)
        stored = index.objects.get(key) if index else None
        if stored is None:
            raise NotFoundError(f"no object {key!r} in job {job!r}")
        if stored.meta.expires and stored.meta.expires <= time.time():
            self._remove(job, key)
            raise NotFoundError(f"object {key!r} in job {job!r} expired")
        return stored

    def _remove(self, job: str, key: str) -> None:
        index = self._jobs[job]
        stored = index.objects[key]
        self._record_delete(job, key, stored)
        del index.objects[key]
        index.sorted_keys = None
        self._unlink(index, stored)

    def _unlink(self, index: _JobIndex, stored: _Stored) -> None:
        index.used -= stored.charged
        self._objects -= 1
        stored.dead = True
        if stored.refs == 0:
            self._free_space(stored.loc, stored.meta.size, stored.charged)

    def _release(self, stored: _Stored) -> None:
        with self._lock:
            stored.refs -= 1
            if stored.dead and stored.refs == 0:
                self._free_space(stored.loc, stored.meta.size, stored.charged)

    def _free_space(self, loc: Any, size: int, charged: int) -> None:
        self._medium_free(loc, size)
        self._used -= charged
