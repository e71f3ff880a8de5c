"""Reads of the HDD tier (see :mod:`pocketlib.tiers.hdd` for how reads are served).

:class:`HddReads`, mixed into the driver, opens an object's file under the tier's lock (so it
is the inode the index names) and reads it outside it: a small value by one pread into memory,
a larger one through a read-only mapping, each checked against the checksum the tier computed
as it wrote the value. A damaged file is moved aside and the read raises ChecksumError; a
lease's release gives back its reference, view and mapping.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from dataclasses import dataclass
from typing import NoReturn

from ..errors import ChecksumError, NotFoundError
from ..protocol import checksum as value_checksum
from .base import Lease, ObjectMeta
from .hdd_files import HEADER_SIZE, os_failure, pread_all
from .hdd_state import HddState, Stored

__all__ = ["HddReads"]


@dataclass(slots=True, eq=False)
class _LeaseHandle:
    stored: Stored
    mm: mmap.mmap | None
    views: list[memoryview]


class HddReads(HddState):
    """The HDD tier's read path: leases and small reads, verified."""

    #: Values up to this size are read into memory, larger ones mapped.
    _pread_max: int
    #: Values up to this size are hashed on every read.
    _verify_max: int
    checksum_errors: int

    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        with self._locked:
            stored = self._index.find(job, key)
            fd = self._open(stored)
            stored.refs += 1
            if take:
                self._index.remove(job, key)
        size = stored.meta.size
        try:
            if size <= self._pread_max:
                data = self._read_verified(fd, stored)
                views = [memoryview(data)] if size else []
                return Lease(stored.meta, views, self._release, _LeaseHandle(stored, None, []))
            mm, view = self._map_verified(fd, stored)
        except BaseException:
            self._release(_LeaseHandle(stored, None, []))
            raise
        finally:
            os.close(fd)
        return Lease(stored.meta, [view], self._release, _LeaseHandle(stored, mm, [view]))

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        """One pread of a small value, hashed before it is returned."""
        with self._locked:
            stored = self._index.find(job, key)
            if stored.meta.size > limit:
                return None
            fd = self._open(stored)
            if take:
                self._index.remove(job, key)
        try:
            return stored.meta, self._read_verified(fd, stored)
        finally:
            os.close(fd)

    def _open(self, stored: Stored) -> int:
        """Open the object's file (lock held, so it is the file the index names)."""
        try:
            path = os.path.join(self._objects_dir, stored.loc.name)
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # removed behind the tier's back
                self._index.remove(stored.job, stored.key)
                raise NotFoundError(
                    f"object {stored.key!r} in job {stored.job!r}: its file is gone"
                ) from None
            raise os_failure(exc, f"cannot open the file of {stored.key!r}") from exc

    def _read_verified(self, fd: int, stored: Stored) -> bytes:
        size = stored.meta.size
        try:
            data = pread_all(fd, size, HEADER_SIZE) if size else b""
        except OSError as exc:
            raise os_failure(exc, f"cannot read {stored.key!r}") from exc
        if len(data) != size:
            self._damaged(stored, f"its file is short by {size - len(data)} bytes")
        if value_checksum(data) != stored.loc.data_checksum:
            self._damaged(stored, "its bytes do not match their checksum")
        return data

    def _map_verified(self, fd: int, stored: Stored) -> tuple[mmap.mmap, memoryview]:
        size = stored.meta.size
        try:
            st = os.fstat(fd)
            if st.st_size != HEADER_SIZE + size:  # a mapping past the end would be SIGBUS
                self._damaged(stored, f"its file is {st.st_size} bytes, not {HEADER_SIZE + size}")
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            mm = mmap.mmap(fd, HEADER_SIZE + size, prot=mmap.PROT_READ)
        except OSError as exc:
            raise os_failure(exc, f"cannot map {stored.key!r}") from exc
        mm.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(mm) as whole:
            view = whole[HEADER_SIZE:]
        state = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if size <= self._verify_max or stored.loc.verified != state:
            if value_checksum(view) != stored.loc.data_checksum:
                view.release()
                mm.close()
                self._damaged(stored, "its bytes do not match their checksum")
            # Remembered only once the file is a second old: a later change then gets a new
            # mtime or ctime even where the clock is coarse.
            if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > 1.0:
                stored.loc.verified = state
        return mm, view

    def _damaged(self, stored: Stored, reason: str) -> NoReturn:
        """A value cannot be trusted: move its file aside and raise ChecksumError."""
        with self._locked:
            self.checksum_errors += 1
            if self._index.discard(stored):
                del self._names[stored.loc.name]
                self._move_aside(stored.loc.name, reason)
        raise ChecksumError(
            f"object {stored.key!r} in job {stored.job!r} is damaged on disk: {reason}"
        )

    def _release(self, handle: _LeaseHandle) -> None:
        stored = handle.stored
        with self._locked:
            self._index.release(stored)
        for view in handle.views:
            with contextlib.suppress(BufferError):
                view.release()
        if handle.mm is not None:
            with contextlib.suppress(BufferError):  # views the caller kept hold the mapping
                handle.mm.close()
