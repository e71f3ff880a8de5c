"""HDD tier: one file per object in a directory.

``pocket node --tier hdd --path DIR --capacity 100GiB``. The directory holds::

    DIR/objects/<name>   committed objects: a 4 KiB header, then the value
    DIR/tmp/             values being written (reservations); removed at start
    DIR/corrupt/         files found damaged, moved aside for inspection, never served
    DIR/version          a ceiling on the versions handed out, so they never repeat
    DIR/lock             flock()ed while a tier serves the directory

A file's name is derived from a hash of its job and key (a suffix tells colliding names
apart); its header carries everything else (job, key, size, checksums, flags, version,
created, expires, and a checksum of the header itself), so the directory *is* the index: at
start it is scanned, every header checked, and an in-memory index (job -> key -> object)
rebuilt. A file whose header is damaged, whose length disagrees with its header, or whose
value does not match its checksum (checked at start for values up to ``recovery_verify_max``)
is moved to ``corrupt/`` and reported, never served.

Writes are two-phase, as the node needs. A reservation of up to ``buffer_max`` bytes is a
memory buffer (while ``memory_budget`` allows), written out with one pwritev at commit; a
larger one is a writable mapping of a preallocated temporary file in ``tmp/``, so large values,
and values larger than memory, go straight into the page cache. ``join`` writes a streamed
value's chunks into one file (appended to the first chunk's with copy_file_range) and hashes
it. ``commit`` then writes the header under the tier's lock, renames the file into
``objects/`` under a fresh name and unlinks the file of the value it replaces: readers see the
old value or the new one, never a mix, and a crash between the two steps leaves both files,
of which the start-up scan keeps the newer. ``sync=True`` adds fdatasync/fsync of the file
and its directory before a put is acknowledged (for power loss; a killed process loses nothing
without it, as the kernel keeps its dirty pages). docs/tiers.md has the measurements behind
the choices.

Reads open the file under the lock (so they get the inode the index names) and read it
outside it: values up to ``pread_max`` by one pread into memory, larger ones through a
read-only mapping. A lease stays valid after the key is deleted or overwritten: the open file
or mapping keeps the unlinked inode alive. The tier checks each value against a checksum it
computed itself as it wrote the value (the checksum a client sends is stored and reported,
not trusted): every read up to ``verify_max`` bytes hashes the value; a larger value is hashed
on its first read and again whenever its file changed (inode, size, mtime or ctime). A
mismatch raises ChecksumError and moves the file aside.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

from ..errors import (
    CapacityError,
    ChecksumError,
    ConfigError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ServerError,
)
from ..protocol import checksum as value_checksum
from .base import Capabilities, Lease, ObjectMeta, Reservation, TierDriver, TierStats
from .hdd_files import (
    HEADER_SIZE,
    charge,
    fsync_dir,
    header_names,
    name_for,
    os_failure,
    pack_header,
    pread_all,
    pwrite_all,
    read_version,
    remove_temps,
    scan_objects,
    write_version,
)
from .hdd_staging import Part, TempFiles, discard, memory_of, write_value
from .objindex import Entry, IndexAnswers, ObjectIndex
from .tierdir import check_parent, lock_dir, unlock_dir

__all__ = ["HEADER_SIZE", "HddTier"]

#: Versions are handed out below a ceiling kept in DIR/version, raised this much at a time.
_VERSION_STEP = 1 << 20

#: Freeing the inode of a large, still dirty file costs milliseconds (its pages are dropped
#: then); a delete or overwrite of a value this large keeps the old file open, and a thread of
#: the tier closes it, so neither the tier's lock nor the caller waits for that. At most this
#: many files are held at once (beyond, the unlink frees the file itself).
_DEFER_FREE_MIN = 1 << 20
_DEFER_FREE_MAX = 256
_MiB = 1024 * 1024


@dataclass(slots=True, eq=False)
class _File:
    """Where an object is: its file in ``objects/``."""

    name: str
    #: Checksum the tier computed over the value as it wrote it (what reads are checked with).
    data_checksum: int
    #: (inode, size, mtime, ctime) of the file when its value last matched its checksum.
    verified: tuple[int, int, int, int] | None = None


_Stored = Entry[_File]


class _Locked:
    """The tier's lock, as a context manager that on release hands the files that
    :meth:`HddTier._defer_free` kept open to the tier's closing thread."""

    __slots__ = ("_tier",)

    def __init__(self, tier: HddTier) -> None:
        self._tier = tier

    def __enter__(self) -> None:
        self._tier._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        tier = self._tier
        fds = tier._deferred
        if fds:
            tier._deferred = []
        tier._lock.release()
        for fd in fds:
            if tier._closed:
                os.close(fd)
            else:
                tier._to_close.put(fd)


@dataclass(slots=True, eq=False)
class _LeaseHandle:
    stored: _Stored
    mm: mmap.mmap | None
    views: list[memoryview]


class HddTier(IndexAnswers, TierDriver):
    """Objects as files under ``path``, ``capacity`` bytes in all (headers included)."""

    name = "hdd"
    capabilities = Capabilities(shared_memory=False, persistent=True, zero_copy=False)

    def __init__(
        self,
        capacity: int,
        path: str,
        *,
        sync: bool = False,
        memory_budget: int = 64 * _MiB,
        buffer_max: int = 16 * _MiB,
        pread_max: int = 256 * 1024,
        verify_max: int = 64 * _MiB,
        recovery_verify_max: int = 1 * _MiB,
    ) -> None:
        """``memory_budget``: bytes of reservations held in memory at once, each of at most
        ``buffer_max`` (others are mapped temporary files); ``pread_max``: values up to this size
        are read into memory, larger ones mapped; ``verify_max``: values up to this size are
        hashed on every read; ``recovery_verify_max``: values up to this size are hashed at
        start."""
        if capacity <= 0:
            raise ConfigError("an HDD tier needs a capacity above zero")
        self.path = os.path.abspath(path)
        self.sync = sync
        self._memory_budget = memory_budget
        self._buffer_max = buffer_max
        self._pread_max = pread_max
        self._verify_max = verify_max
        self._recovery_verify_max = recovery_verify_max
        self._objects_dir = os.path.join(self.path, "objects")
        self._tmp_dir = os.path.join(self.path, "tmp")
        self._corrupt_dir = os.path.join(self.path, "corrupt")
        self._version_path = os.path.join(self.path, "version")

        self._lock = threading.Lock()
        self._locked = _Locked(self)
        self._index_guard = self._locked
        self._deferred: list[int] = []
        self._to_close: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closer: threading.Thread | None = None
        self._index: ObjectIndex[_File] = ObjectIndex(capacity, on_remove=self._delete)
        #: File name -> object: which names in objects/ are taken.
        self._names: dict[str, _Stored] = {}
        self._in_memory = 0
        self._version_ceiling = 0
        self._temps = TempFiles(self._tmp_dir)
        self._closed = False
        self.recovered = 0
        self.dropped = 0
        self.removed_temps = 0
        self.checksum_errors = 0

        if not os.path.lexists(self.path):
            check_parent(self.path, "hdd")
            # Nothing stored yet: refuse a capacity the disk cannot hold before creating anything.
            self._check_space(os.path.dirname(self.path))
        self._lock_fd = lock_dir(self.path, "hdd")
        try:
            for d in (self._objects_dir, self._tmp_dir, self._corrupt_dir):
                os.makedirs(d, exist_ok=True)
        except OSError as exc:
            unlock_dir(self._lock_fd)
            raise ConfigError(
                f"cannot use {self.path} for the hdd tier: {exc.strerror or exc}"
            ) from exc
        try:
            self._start()
        except BaseException:
            unlock_dir(self._lock_fd)
            raise

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        if path is None:
            raise ConfigError("the hdd tier needs --path DIR")
        return cls(capacity, path)

    @property
    def capacity(self) -> int:
        return self._index.capacity

    @staticmethod
    def charge_for(nbytes: int) -> int:
        """Bytes a value of ``nbytes`` is charged: the header plus the value in whole blocks."""
        return charge(nbytes)

    # -- start --------------------------------------------------------------------------------
    def _start(self) -> None:
        try:
            # A directory that cannot be written is refused now, not at the first put.
            probe = os.path.join(self._tmp_dir, f"probe-{os.getpid()}")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
            self._recover()
            self._raise_version_ceiling()
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.path} for the hdd tier: {exc.strerror or exc}"
            ) from exc
        self._check_space(self.path)
        ix = self._index
        if ix.used > ix.capacity:
            print(
                f"pocket hdd tier: {ix.used} bytes stored in {self.path} exceed the capacity "
                f"{ix.capacity}; new puts are refused until objects are deleted",
                file=sys.stderr,
            )

    def _check_space(self, path: str) -> None:
        """ConfigError unless the file system of ``path`` has room for the capacity (less what
        the tier already stores there)."""
        try:
            st = os.statvfs(path)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.path} for the hdd tier: {exc.strerror}") from exc
        free = st.f_bavail * st.f_frsize
        used, capacity = self._index.used, self._index.capacity
        if capacity > free + used:
            stored = f" (besides {used} bytes already stored)" if used else ""
            raise ConfigError(
                f"{self.path} has {free} bytes free{stored}, too few for a capacity of "
                f"{capacity}; lower --capacity or free space"
            )

    def _recover(self) -> None:
        """Rebuild the index from the object files; remove what a crash left in tmp/."""
        self.removed_temps += remove_temps(self._tmp_dir)
        ix = self._index
        scan = scan_objects(self._objects_dir, self._recovery_verify_max, self._move_aside)
        self.dropped += scan.dropped
        ix.version = max(read_version(self._version_path), scan.version)
        for header, name in scan.found:
            meta = ObjectMeta(
                header.size, header.checksum, header.flags, header.version, header.created,
                header.expires,
            )  # fmt: skip
            stored = Entry(
                meta, _File(name, header.data_checksum), charge(header.size), header.job,
                header.key,
            )  # fmt: skip
            self._insert(stored)
            ix.used += stored.charged
        ix.peak = ix.used
        self.recovered = len(scan.found)

    def _move_aside(self, name: str, reason: str) -> None:
        """Move objects/``name`` to corrupt/ and say so."""
        target = os.path.join(self._corrupt_dir, f"{name}.{time.time_ns()}")
        try:
            os.rename(os.path.join(self._objects_dir, name), target)
        except OSError as exc:
            reason += f" (and it could not be moved aside: {exc.strerror})"
        print(
            f"pocket hdd tier: {os.path.join(self._objects_dir, name)} is not served: {reason}; "
            f"moved to {self._corrupt_dir}",
            file=sys.stderr,
        )

    def _raise_version_ceiling(self) -> None:
        """Persist a new ceiling above every version handed out so far (lock held or at
        start): after a crash, versions continue above it, so a reader's pin never matches a
        value it did not read."""
        ceiling = self._index.version + _VERSION_STEP
        write_version(self._version_path, ceiling)
        self._version_ceiling = ceiling

    # -- write path ---------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> Reservation:
        if nbytes < 0:
            raise ValueError("negative size")
        charged = charge(nbytes)
        with self._locked:
            self._take(nbytes, charged)
            in_memory = nbytes <= min(self._buffer_max, self._memory_budget - self._in_memory)
            if in_memory:
                self._in_memory += nbytes
        try:
            part = self._temps.new_part(nbytes, in_memory)
        except BaseException:
            with self._locked:
                self._index.used -= charged
                if in_memory:
                    self._in_memory -= nbytes
            raise
        buffers = [part.view] if part.view is not None else []
        return Reservation(nbytes, buffers, charged, [part])

    def _take(self, nbytes: int, charged: int) -> None:
        """Charge space (lock held); CapacityError if it is not there."""
        if self._closed:
            raise ServerError("the hdd tier is closed")
        ix = self._index
        free = ix.capacity - ix.used
        if charged > free:
            raise CapacityError(
                f"hdd tier is full: {nbytes} bytes ({charged} with header) requested, "
                f"{max(free, 0)} of {ix.capacity} free"
            )
        ix.charge(charged)

    def abort(self, res: Reservation) -> None:
        with self._locked:
            if res.done:
                return
            res.done = True
            self._index.used -= res.charged
            self._in_memory -= memory_of(res.loc)
        discard(res.loc)

    def join(self, parts: list[Reservation]) -> Reservation:
        """One reservation holding the filled ``parts``' bytes, in order, in one file.

        The bytes are written and hashed here, not in commit: a node calls commit under its
        own lock, join outside it. Buffered parts are written out with pwrite, mapped ones
        copied in the kernel (copy_file_range) from their files, each unlinked once copied, so
        a value larger than memory never passes through the process. An error is kept and
        raised by commit, whose errors the node reports. The joined reservation's buffers
        are a read-only view of that file: there is nothing left to fill, and the checksum
        covers the bytes as joined.
        """
        with self._locked:
            if any(p.done for p in parts):
                raise ValueError("reservation already committed or aborted")
            for p in parts:
                p.done = True
        locs: list[Part] = [part for p in parts for part in p.loc]
        size = sum(p.size for p in parts)
        charged = sum(p.charged for p in parts)
        memory = memory_of(locs)
        joined = Part(size)
        try:
            joined.fd, joined.path, joined.data_checksum = write_value(locs, self._temps, self.sync)
        except PocketError as exc:
            joined.error = exc
        except BaseException:
            with self._locked:
                self._index.used -= charged
                self._in_memory -= memory
            discard(locs)
            raise
        with self._locked:
            self._in_memory -= memory
        if joined.error is not None:
            discard(locs)
        elif size:
            with contextlib.suppress(OSError):
                assert joined.fd is not None
                joined.mm = mmap.mmap(joined.fd, HEADER_SIZE + size, prot=mmap.PROT_READ)
                with memoryview(joined.mm) as whole:
                    joined.view = whole[HEADER_SIZE:]
        buffers = [joined.view] if joined.view is not None else []
        return Reservation(size, buffers, charged, [joined])

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
        try:
            names = header_names(job, key)
        except InvalidKeyError:
            self.abort(res)
            raise
        with self._locked:
            if res.done:
                raise ValueError("reservation already committed or aborted")
            res.done = True
        parts: list[Part] = res.loc
        joined = parts[0] if len(parts) == 1 else None
        if joined is not None and joined.error is not None:
            with self._locked:
                self._index.used -= res.charged
            raise joined.error
        if joined is not None and joined.fd is not None and joined.path is not None:
            # Written and hashed by join: only the header and the rename are left.
            fd, path, data_checksum, memory = joined.fd, joined.path, joined.data_checksum, 0
            joined.close()
            joined.fd = joined.path = None
        else:
            memory = memory_of(parts)
            try:
                fd, path, data_checksum = write_value(parts, self._temps, self.sync)
            except BaseException:
                with self._locked:
                    self._index.used -= res.charged
                    self._in_memory -= memory
                discard(parts)
                raise
        return self._publish(
            fd, path, job, key, names, res.size, res.charged, memory, checksum, data_checksum,
            flags, ttl,
        )  # fmt: skip

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
        """Write a value held in memory straight to its temporary file (no staging copy)."""
        view = memoryview(data).cast("B")
        names = header_names(job, key)
        nbytes = len(view)
        charged = charge(nbytes)
        data_checksum = value_checksum(view)
        with self._locked:
            self._take(nbytes, charged)
        try:
            fd, path = self._temps.create()
            try:
                pwrite_all(fd, view, HEADER_SIZE)
                if self.sync:
                    os.fdatasync(fd)
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise os_failure(exc, "cannot write a value") from exc
        except BaseException:
            with self._locked:
                self._index.used -= charged
            raise
        return self._publish(
            fd, path, job, key, names, nbytes, charged, 0,
            data_checksum if checksum is None else checksum, data_checksum, flags, ttl,
        )  # fmt: skip

    def _publish(
        self,
        fd: int,
        path: str,
        job: str,
        key: str,
        names: tuple[bytes, bytes],
        size: int,
        charged: int,
        memory: int,
        checksum: int,
        data_checksum: int,
        flags: int,
        ttl: float | None,
    ) -> ObjectMeta:
        """Write the header of a filled temporary file and rename it into ``objects/``."""
        now = time.time()
        expires = now + ttl if ttl else 0.0
        try:
            with self._locked:
                self._in_memory -= memory
                try:
                    if self._index.version >= self._version_ceiling:
                        self._raise_version_ceiling()
                    version = self._index.version + 1
                    header = pack_header(
                        names[0], names[1], size, checksum, data_checksum, flags, version, now,
                        expires,
                    )  # fmt: skip
                    # A fresh name, never the replaced object's: on ext4, renaming over an
                    # existing file first starts writing the new one back (auto_da_alloc), in
                    # this call, under both locks. The file replaced is unlinked after the
                    # rename (in _insert); readers see the old value or the new one, and a
                    # crash in between leaves both files, of which a restart keeps the newer.
                    name = self._free_name(job, key)
                    os.pwrite(fd, header, 0)
                    os.rename(path, os.path.join(self._objects_dir, name))
                except BaseException as exc:
                    self._index.used -= charged
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    if isinstance(exc, OSError):
                        raise os_failure(exc, "cannot commit a value") from exc
                    raise
                self._index.version = version
                meta = ObjectMeta(size, checksum, flags, version, now, expires)
                self._insert(Entry(meta, _File(name, data_checksum), charged, job, key))
            if self.sync:
                os.fsync(fd)
                fsync_dir(self._objects_dir)
        finally:
            os.close(fd)
        return meta

    def _free_name(self, job: str, key: str) -> str:
        """A file name for a new object (lock held): the hash, or the first free suffix."""
        base = self._name_base(job, key)
        if base not in self._names:
            return base
        for i in itertools.count(1):
            name = f"{base}.{i}"
            if name not in self._names:
                return name
        raise AssertionError("unreachable")

    #: Hash of job and key to a file name (a class attribute so tests can force collisions).
    _name_base = staticmethod(name_for)

    # -- read path ----------------------------------------------------------------------------
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

    def _open(self, stored: _Stored) -> int:
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

    def _read_verified(self, fd: int, stored: _Stored) -> bytes:
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

    def _map_verified(self, fd: int, stored: _Stored) -> tuple[mmap.mmap, memoryview]:
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

    def _damaged(self, stored: _Stored, reason: str) -> NoReturn:
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

    # -- accounting (stat, delete, list and bulk deletes: IndexAnswers) ------------------------
    def stats(self) -> TierStats:
        with self._locked:
            return self._index.stats(
                self.name,
                {
                    "recovered": self.recovered,
                    "dropped_corrupt": self.dropped,
                    "removed_temps": self.removed_temps,
                    "checksum_errors": self.checksum_errors,
                },
            )

    def close(self) -> None:
        """Release the directory (its lock). Leases still held keep their files readable."""
        with self._locked:
            if self._closed:
                return
            self._closed = True
            closer = self._closer
        if closer is not None:
            self._to_close.put(None)
            closer.join()
            with contextlib.suppress(queue.Empty):
                while True:  # handed over while the tier was being closed
                    fd = self._to_close.get_nowait()
                    if fd is not None:
                        os.close(fd)
        unlock_dir(self._lock_fd)

    # -- internals (lock held) ----------------------------------------------------------------
    def _insert(self, stored: _Stored) -> None:
        """Index ``stored``; the object it replaces (same key) is unlinked, file and all."""
        old = self._index.insert(stored)
        if old is not None:
            self._delete(old)
        self._names[stored.loc.name] = stored

    def _delete(self, stored: _Stored) -> None:
        """An object leaves the index (deleted or replaced): its name is free, its file
        unlinked (leases keep it readable)."""
        del self._names[stored.loc.name]
        self._delete_file(stored)

    def _delete_file(self, stored: _Stored) -> None:
        # No POSIX_FADV_DONTNEED first: on a file still dirty it starts writing the value to
        # disk, only to free it; unlinking drops its pages unwritten (docs/tiers.md).
        self._defer_free(stored.loc.name, stored.meta.size)
        try:
            os.unlink(os.path.join(self._objects_dir, stored.loc.name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            print(
                f"pocket hdd tier: cannot remove the file of {stored.key!r} in job "
                f"{stored.job!r}: {exc.strerror}; a restart keeps the newest value of the key",
                file=sys.stderr,
            )

    def _defer_free(self, name: str, size: int) -> None:
        """Keep a large file that is about to be unlinked open, for the closing thread: the
        last close, not the unlink, then frees its pages and blocks."""
        if size < _DEFER_FREE_MIN or self._closed:
            return
        if len(self._deferred) + self._to_close.qsize() >= _DEFER_FREE_MAX:
            return
        with contextlib.suppress(OSError):
            path = os.path.join(self._objects_dir, name)
            self._deferred.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        if self._closer is None:
            self._closer = threading.Thread(
                target=_close_files, args=(self._to_close,), name="pocket-hdd-closer", daemon=True
            )
            self._closer.start()


def _close_files(fds: queue.SimpleQueue[int | None]) -> None:
    """The closing thread: close each file until told to stop."""
    while (fd := fds.get()) is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
