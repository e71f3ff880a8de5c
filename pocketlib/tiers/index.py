"""IndexedTier: a tier that holds values in addressable memory, over an :class:`ObjectIndex`.

One lock covers the index (objects, leases, TTL expiry, per-job accounting) and the medium's
allocator. A subclass supplies only the medium: how to allocate and free space and how to view
it as buffers (DRAM: a shared-memory arena; NVMe: a mapped file).

Deleting or overwriting an object that is leased only unlinks it; its space is freed when the
last lease is released, so a reader never sees bytes of a later value.
"""

from __future__ import annotations

import abc
import functools
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import CapacityError, NotFoundError, PocketError
from ..protocol import Buffer
from ..protocol import checksum as value_checksum
from .base import Lease, ObjectMeta, PutItem, Reservation, TierDriver, TierStats
from .objindex import Entry, IndexAnswers, ObjectIndex

__all__ = ["IndexedTier"]

# Builds an ObjectMeta from a tuple in C (a NamedTuple's __new__ is a Python function).
_new_meta = functools.partial(tuple.__new__, ObjectMeta)

#: An indexed object; ``loc`` is the medium's location of its space.
_Stored = Entry[Any]


class IndexedTier(IndexAnswers, TierDriver):
    """A TierDriver over an allocatable medium; subclasses implement the ``_medium_*`` hooks."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._index_guard = self._lock
        self._index: ObjectIndex[Any] = ObjectIndex(
            capacity, on_free=self._free_entry, on_remove=self._removing
        )

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
        return self._index.capacity

    def reserve(self, nbytes: int) -> Reservation:
        if nbytes < 0:
            raise ValueError("negative size")
        with self._lock:
            loc, charged = self._take_space(nbytes)
        return Reservation(nbytes, self._medium_buffers(loc, nbytes, True), charged, loc)

    def _take_space(self, nbytes: int) -> tuple[Any, int]:
        """Allocate and charge space (lock held); CapacityError if it is not there."""
        ix = self._index
        free = ix.capacity - ix.used
        got = self._medium_allocate(nbytes) if nbytes <= free else None
        if got is None:
            raise CapacityError(
                f"{self.name} tier is full: {nbytes} bytes requested, {free} of {ix.capacity} free"
            )
        loc, charged = got
        ix.used += charged
        if ix.used > ix.peak:
            ix.peak = ix.used
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
        now = time.time()
        with self._lock:
            return self._store(job, key, data, checksum, flags, now, ttl)

    def put_many(
        self, job: str, items: Sequence[PutItem], *, ttl: float | None = None
    ) -> list[ObjectMeta | PocketError]:
        """:meth:`put` of each item under one hold of the lock."""
        out: list[ObjectMeta | PocketError] = []
        now = time.time()
        with self._lock:
            for key, data, checksum, flags in items:
                try:
                    out.append(self._store(job, key, data, checksum, flags, now, ttl))
                except CapacityError as exc:
                    out.append(exc)
        return out

    def _store(
        self, job: str, key: str, data: Buffer, checksum: int, flags: int, now: float,
        ttl: float | None,
    ) -> ObjectMeta:  # fmt: skip
        """Allocate, copy and publish one value held in memory (lock held)."""
        nbytes = len(data)
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
        ix = self._index
        ix.version += 1
        expires = now + ttl if ttl else 0.0
        meta = _new_meta((size, checksum, flags, ix.version, now, expires))
        stored = Entry(meta, loc, charged, job, key)
        try:
            # Recorded before the value it replaces is freed: a persistent tier that crashes
            # right after must find the new value, never the old one over reused space.
            self._record_put(job, key, stored)
        except BaseException:
            self._free_space(loc, size, charged)
            raise
        ix.insert(stored)
        return meta

    def _restore(self, job: str, key: str, meta: ObjectMeta, loc: Any, charged: int) -> None:
        """Index an object found on the medium at start (no record is written)."""
        with self._lock:
            ix = self._index
            ix.insert(Entry(meta, loc, charged, job, key))
            ix.charge(charged)
            ix.version = max(ix.version, meta.version)

    # -- persistence hooks (lock held); a persistent tier records changes here ----------------
    def _record_put(self, job: str, key: str, stored: _Stored) -> None:
        """``key`` now names ``stored`` (it may replace an older object)."""

    def _record_delete(self, job: str, key: str, stored: _Stored) -> None:
        """``key`` (the object ``stored``) is gone."""

    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        with self._lock:
            stored = self._index.find(job, key)
            stored.refs += 1
            if take:
                self._index.remove(job, key)
        views = self._medium_buffers(stored.loc, stored.meta.size, False)
        return Lease(stored.meta, views, self._release, stored, stored.loc)

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        """Copy a small value out under the lock: no lease to take and give back."""
        with self._lock:
            return self._copy_small(job, key, limit, take)

    def read_many(
        self, job: str, keys: Sequence[str], limit: int, *, take: bool = False
    ) -> list[tuple[ObjectMeta, bytes] | PocketError | None]:
        """:meth:`read_small` of each key under one hold of the lock (a batch of small values
        costs about half of one read_small per key)."""
        out: list[tuple[ObjectMeta, bytes] | PocketError | None] = []
        with self._lock:
            for key in keys:
                try:
                    out.append(self._copy_small(job, key, limit, take))
                except NotFoundError as exc:
                    out.append(exc)
        return out

    def _copy_small(
        self, job: str, key: str, limit: int, take: bool
    ) -> tuple[ObjectMeta, bytes] | None:
        """:meth:`read_small`'s work (lock held)."""
        stored = self._index.find(job, key)
        meta = stored.meta
        if meta.size > limit:
            return None
        data = self._medium_bytes(stored.loc, meta.size)
        if take:
            self._index.remove(job, key)
        return meta, data

    def _medium_bytes(self, loc: Any, nbytes: int) -> bytes:
        """A copy of the value at ``loc`` (lock held)."""
        views = self._medium_buffers(loc, nbytes, False)
        return views[0].tobytes() if len(views) == 1 else b"".join(views)

    def stats(self) -> TierStats:
        with self._lock:
            return self._index.stats(self.name, self._counters())

    def _counters(self) -> dict[str, int]:
        """Driver-specific counters for :meth:`stats` (lock held)."""
        return {}

    # -- internals (lock held) ----------------------------------------------------------------
    def _removing(self, stored: _Stored) -> None:
        self._record_delete(stored.job, stored.key, stored)

    def _free_entry(self, stored: _Stored) -> None:
        """An object's space is neither indexed nor leased: give it back (its charge is off)."""
        self._medium_free(stored.loc, stored.meta.size)

    def _release(self, stored: _Stored) -> None:
        with self._lock:
            self._index.release(stored)

    def _free_space(self, loc: Any, size: int, charged: int) -> None:
        self._medium_free(loc, size)
        self._index.used -= charged
