"""The S3 tier's index and the deletes that keep the bucket in step with it.

What the tier stored is kept in memory (see :mod:`pocketlib.tiers.s3`): :class:`S3Index`, mixed
into the driver, answers stat and list from it alone, and deletes one key, a key prefix, a job
or what expired, in batches of up to 1000 keys per DeleteObjects request. Commits and deletes
of one key are serialized by a per-key lock (:meth:`S3Index._key_locked`), so the bucket and
the index always agree on which version a key holds.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import ServerError
from .base import ObjectMeta
from .objindex import Entry, ObjectIndex
from .s3requests import S3Requests

__all__ = ["S3Index", "S3Object", "Stored"]

#: Keys per DeleteObjects request (S3's maximum).
_DELETE_BATCH = 1000


@dataclass(slots=True, frozen=True)
class S3Object:
    """Where a value is stored."""

    #: The object's S3 key.
    name: str
    #: xxh3 of the stored bytes (what reads are verified against).
    digest: int


#: An indexed value; it is charged its size.
Stored = Entry[S3Object]


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class S3Index(S3Requests):
    """The S3 tier's index side: lookups, deletes and the per-key locks (the driver's
    ``__init__`` sets the state declared here)."""

    #: Guards the index and the table of key locks (never held during a request).
    _lock: threading.Lock
    _index: ObjectIndex[S3Object]
    #: The locks of keys being committed or deleted, each with a count of its users.
    _key_locks: dict[tuple[str, str], _KeyLock]

    def stat(self, job: str, key: str) -> ObjectMeta:
        with self._lock:
            return self._index.find(job, key, drop_expired=False).meta

    # -- deletes ------------------------------------------------------------------------------
    def delete(self, job: str, key: str) -> bool:
        with self._key_locked([(job, key)]):
            with self._lock:
                stored = self._index.get(job, key)
            if stored is None:
                return False
            self._delete_names([stored.loc.name])
            with self._lock:
                self._index.discard(stored)
            return True

    def delete_prefix(self, job: str, prefix: str) -> int:
        with self._lock:
            keys = self._index.keys(job, prefix)
        return self._delete_many(job, keys, None)

    def delete_job(self, job: str) -> int:
        with self._lock:
            keys = self._index.keys(job)
        count = self._delete_many(job, keys, None)
        with self._lock:
            self._index.drop_job_if_empty(job)
        return count

    def expire(self, now: float) -> int:
        due: dict[str, dict[str, int]] = {}
        with self._lock:
            for stored in self._index.due(now):
                due.setdefault(stored.job, {})[stored.key] = stored.meta.version
        count = 0
        for job, versions in due.items():
            try:
                count += self._delete_many(job, sorted(versions), versions)
            except BaseException:
                with self._lock:  # not deleted: due again next time
                    for key, version in versions.items():
                        heapq.heappush(self._index.expiry, (now, version, job, key))
                raise
        return count

    def _delete_many(self, job: str, keys: list[str], versions: dict[str, int] | None) -> int:
        """Delete ``keys`` of ``job`` (only at these versions, if given); returns the count."""
        count = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with self._key_locked([(job, k) for k in batch]):
                with self._lock:
                    doomed: list[Stored] = []
                    for key in batch:
                        stored = self._index.get(job, key)
                        if stored is None:
                            continue
                        if versions is not None and stored.meta.version != versions[key]:
                            continue
                        doomed.append(stored)
                if not doomed:
                    continue
                failed = self._delete_names([s.loc.name for s in doomed], strict=False)
                with self._lock:
                    for stored in doomed:
                        if stored.loc.name not in failed:
                            self._index.discard(stored)
                            count += 1
                if failed:
                    name, why = next(iter(failed.items()))
                    raise ServerError(
                        f"S3 DELETE s3://{self.bucket}/{name}: {why} "
                        f"({len(failed)} objects not deleted)"
                    )
        return count

    # -- listing ------------------------------------------------------------------------------
    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        now = time.time()
        with self._lock:
            return self._index.page(job, prefix, after, limit, now)

    # -- internals ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _key_locked(self, pairs: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Hold the locks of these keys (taken in sorted order: no deadlock between holders)."""
        wanted: list[tuple[str, str]] = sorted(set(pairs))
        with self._lock:
            entries = []
            for pair in wanted:
                entry = self._key_locks.get(pair)
                if entry is None:
                    entry = self._key_locks[pair] = _KeyLock()
                entry.users += 1
                entries.append(entry)
        held = 0
        try:
            for entry in entries:
                entry.lock.acquire()
                held += 1
            yield
        finally:
            for entry in entries[:held]:
                entry.lock.release()
            with self._lock:
                for pair, entry in zip(wanted, entries, strict=True):
                    entry.users -= 1
                    if entry.users == 0:
                        del self._key_locks[pair]

    def _release(self, stored: Stored) -> None:
        with self._lock:
            self._index.release(stored)
