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
import itertools
import mmap
import os
import queue
import threading
import time

from ..errors import CapacityError, ConfigError, InvalidKeyError, PocketError, ServerError
from ..protocol import checksum as value_checksum
from .base import Capabilities, ObjectMeta, Reservation, TierDriver, TierStats
from .hdd_files import (
    HEADER_SIZE,
    charge,
    fsync_dir,
    header_names,
    name_for,
    os_failure,
    pack_header,
    pwrite_all,
)
from .hdd_reads import HddReads
from .hdd_recovery import HddRecovery
from .hdd_staging import Part, TempFiles, discard, memory_of, write_value
from .hdd_state import File, Locked, Stored
from .objindex import Entry, IndexAnswers, ObjectIndex
from .tierdir import check_parent, lock_dir, unlock_dir

__all__ = ["HEADER_SIZE", "HddTier"]

_MiB = 1024 * 1024


class HddTier(HddReads, HddRecovery, IndexAnswers, TierDriver):
    """Objects as files under ``path``, ``capacity`` bytes in all (headers included).

    The write path is here; the start-up is :class:`HddRecovery`'s, the read path
    :class:`HddReads`'s, and both build on :class:`~pocketlib.tiers.hdd_state.HddState`."""

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
        self._locked = Locked(self)
        self._index_guard = self._locked
        self._deferred: list[int] = []
        self._to_close: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closer: threading.Thread | None = None
        self._index: ObjectIndex[File] = ObjectIndex(capacity, on_remove=self._delete)
        #: File name -> object: which names in objects/ are taken.
        self._names: dict[str, Stored] = {}
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
                self._insert(Entry(meta, File(name, data_checksum), charged, job, key))
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
