"""NVMe tier: an allocator over a preallocated, memory-mapped file, plus a metadata journal.

``pocket node --tier nvme --path DIR --capacity 8GiB``. Values are received straight into the
mapping and sent straight out of it, exactly as in the DRAM tier; what this tier adds is memory
of what it holds, kept in ``DIR/journal`` (see :mod:`pocketlib.tiers.journal`):

* a value is in the mapping before its PUT record is appended, and the put is acknowledged
  after the append, so every acknowledged put has a complete record;
* a new value's record is appended before the space of the value it replaces is freed, and a
  DEL record before a deleted value's space is, so replay never points at reused space;
* at start the journal is replayed, the allocator rebuilt from the live extents, and every
  object's checksum verified against the mapped data: an object whose bytes do not match is
  dropped (and recorded as deleted), counted in the tier's stats, never served.

The kernel keeps a killed process's dirty pages, so this survives ``kill -9`` without fsync;
``sync=True`` adds msync and fdatasync per put for power loss, at a large cost per put.
docs/tiers.md says why an allocator rather than a log-structured data file.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import time
from typing import Any

from ..errors import ConfigError
from ..protocol import Hasher
from .allocator import Allocator
from .base import Capabilities, ObjectMeta, TierDriver
from .index import _Stored
from .journal import Journal, JournalPut
from .mapped import MappedTier
from .tierdir import lock_dir, unlock_dir

__all__ = ["NvmeTier"]

#: Rewrite the journal when it holds this many records more than twice the live objects.
_COMPACT_SLACK = 4096


class NvmeTier(MappedTier):
    """Values in ``path/data``, a file of ``capacity`` bytes; what is stored in ``path/journal``."""

    name = "nvme"
    capabilities = Capabilities(shared_memory=True, persistent=True, zero_copy=True)

    def __init__(self, capacity: int, path: str, *, sync: bool = False, align: int = 64) -> None:
        if capacity <= 0:
            raise ConfigError("an NVMe tier needs a capacity above zero")
        self.path = os.path.abspath(path)
        self.sync = sync
        self._lock_fd = lock_dir(self.path, "nvme")
        try:
            mapping = self._map_data(capacity)
            self._journal = Journal(os.path.join(self.path, "journal"), sync=sync)
        except BaseException:
            unlock_dir(self._lock_fd)
            raise
        super().__init__(mapping, Allocator(capacity, align))
        self.shared_path = os.path.join(self.path, "data")
        self.recovered = 0
        self.dropped = 0
        self._recover()

    def _map_data(self, capacity: int) -> mmap.mmap:
        data = os.path.join(self.path, "data")
        created = not os.path.exists(data)
        fd = os.open(data, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < capacity:
                # Reserve the blocks now: a disk that fills up later would kill the node with
                # SIGBUS on a write to the mapping instead of refusing a put. Check first: a
                # posix_fallocate that fails part-way keeps what it allocated, filling the disk.
                st = os.statvfs(self.path)
                free = st.f_bavail * st.f_frsize
                if capacity - size > free:
                    raise ConfigError(
                        f"{self.path} has {free} bytes free, too few for a capacity of "
                        f"{capacity}; lower --capacity or free space"
                    )
                try:
                    os.posix_fallocate(fd, 0, capacity)
                except OSError as exc:
                    os.ftruncate(fd, size)  # give back whatever was allocated
                    raise ConfigError(
                        f"cannot reserve {capacity} bytes in {self.path}: {exc.strerror}"
                    ) from exc
            return mmap.mmap(fd, capacity)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(data)
            raise
        finally:
            os.close(fd)

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        if path is None:
            raise ConfigError("the nvme tier needs --path DIR")
        return cls(capacity, path)

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        live = self._journal.load()
        now = time.time()
        survivors: list[JournalPut] = []
        for put in sorted(live.values(), key=lambda p: p.version):
            if put.expires and put.expires <= now:
                self._journal.append_delete(put.job, put.key, put.version)
            elif not self._intact(put):
                self.dropped += 1
                self._journal.append_delete(put.job, put.key, put.version)
                print(
                    f"pocket nvme tier: dropped {put.key!r} of job {put.job!r}: its stored "
                    "bytes do not match their checksum",
                    file=sys.stderr,
                )
            else:
                survivors.append(put)
        try:
            self._allocator.reset([e for p in survivors for e in p.extents])
        except ValueError as exc:
            raise ConfigError(f"the journal in {self.path} is inconsistent: {exc}") from exc
        align = self._allocator.align
        for put in survivors:
            meta = ObjectMeta(
                put.size, put.checksum, put.flags, put.version, put.created, put.expires
            )
            charged = sum(-(-n // align) * align for _, n in put.extents)
            self._restore(put.job, put.key, meta, [tuple(e) for e in put.extents], charged)
        self.recovered = len(survivors)
        self._index.used = self._allocator.used
        if self._journal.records > 2 * len(survivors) + _COMPACT_SLACK:
            self._journal.rewrite(survivors)

    def _intact(self, put: JournalPut) -> bool:
        if sum(n for _, n in put.extents) != put.size:
            return False
        if any(s + n > self._allocator.capacity for s, n in put.extents):
            return False
        hasher = Hasher()
        for start, length in put.extents:
            hasher.update(self._ro_view[start : start + length])
        return hasher.intdigest() == put.checksum

    # -- journal hooks (tier lock held) -------------------------------------------------------
    def _record_put(self, job: str, key: str, stored: _Stored) -> None:
        self._maybe_compact()
        if self.sync:
            self._flush_extents(stored.loc)
        m = stored.meta
        self._journal.append_put(
            JournalPut(
                job, key, m.version, m.size, m.checksum, m.flags, m.created, m.expires,
                list(stored.loc),
            )
        )  # fmt: skip

    def _record_delete(self, job: str, key: str, stored: _Stored) -> None:
        self._maybe_compact()
        self._journal.append_delete(job, key, stored.meta.version)

    def _maybe_compact(self) -> None:
        # Before a record is appended: the rewrite holds exactly the committed objects.
        if self._journal.records <= 2 * self._index.objects + _COMPACT_SLACK:
            return
        live = [
            JournalPut(
                s.job, s.key, s.meta.version, s.meta.size, s.meta.checksum, s.meta.flags,
                s.meta.created, s.meta.expires, list(s.loc),
            )
            for s in self._index.entries()
        ]  # fmt: skip
        self._journal.rewrite(live)

    def _flush_extents(self, loc: Any) -> None:
        page = mmap.PAGESIZE
        for start, length in loc:
            first = start - start % page
            self._map.flush(first, start + length - first)

    def _counters(self) -> dict[str, int]:
        return {
            "recovered": self.recovered,
            "dropped_corrupt": self.dropped,
            "journal_records": self._journal.records,
        }

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._map.flush()
        self._journal.close()
        super().close()
        unlock_dir(self._lock_fd)
