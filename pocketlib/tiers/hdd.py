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
import fcntl
import hashlib
import heapq
import itertools
import mmap
import os
import queue
import stat as stat_mod
import struct
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from ..errors import (
    CapacityError,
    ChecksumError,
    ConfigError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ServerError,
)
from ..protocol import Hasher
from ..protocol import checksum as value_checksum
from .base import Capabilities, Lease, ObjectMeta, Reservation, TierDriver, TierStats

__all__ = ["HEADER_SIZE", "HddTier"]

#: Bytes before the value in an object file: the value starts on a page boundary, so it can be
#: mapped on its own, and copy_file_range can clone block-aligned ranges where the file system
#: supports it.
HEADER_SIZE = 4096
#: Values are charged in whole blocks, so that ``capacity`` bounds the disk space used.
BLOCK = 4096
FORMAT_VERSION = 1
_MAGIC = b"POCKETHD"
# magic, header checksum, format version, reserved, job length, key length, size, checksum (as
# given), data checksum (computed by the tier), flags, version, created, expires; then the job
# and key bytes. The header checksum covers everything after itself.
_FIXED = struct.Struct("<8sQHHHHQQQQQdd")
_MAX_NAMES = HEADER_SIZE - _FIXED.size
_ZEROS = bytes(HEADER_SIZE)
#: Versions are handed out below a ceiling kept in DIR/version, raised this much at a time.
_VERSION_STEP = 1 << 20
_COPY_CHUNK = 1 << 30
#: Freeing the inode of a large, still dirty file costs milliseconds (its pages are dropped
#: then); a delete or overwrite of a value this large keeps the old file open, and a thread of
#: the tier closes it, so neither the tier's lock nor the caller waits for that. At most this
#: many files are held at once (beyond, the unlink frees the file itself).
_DEFER_FREE_MIN = 1 << 20
_DEFER_FREE_MAX = 256
_MiB = 1024 * 1024


class _Header(NamedTuple):
    job: str
    key: str
    size: int
    checksum: int
    data_checksum: int
    flags: int
    version: int
    created: float
    expires: float


class _Damaged(Exception):
    """A file in objects/ that must not be served (the message says why)."""


def _pack_header(
    job: bytes, key: bytes, size: int, checksum: int, data_checksum: int, flags: int,
    version: int, created: float, expires: float,
) -> bytes:  # fmt: skip
    fixed = _FIXED.pack(
        _MAGIC, 0, FORMAT_VERSION, 0, len(job), len(key), size, checksum, data_checksum, flags,
        version, created, expires,
    )  # fmt: skip
    body = fixed[16:] + job + key
    head = _MAGIC + value_checksum(body).to_bytes(8, "little") + body
    return head + _ZEROS[len(head) :]


def _parse_header(raw: bytes) -> _Header:
    """The header at the start of an object file; _Damaged if it is not a valid one."""
    if len(raw) < _FIXED.size:
        raise _Damaged(f"file of {len(raw)} bytes is shorter than a header")
    (magic, header_checksum, fmt, _, job_len, key_len, size, checksum, data_checksum, flags,
     version, created, expires) = _FIXED.unpack_from(raw)  # fmt: skip
    if magic != _MAGIC:
        raise _Damaged("not an object file (bad magic)")
    if fmt > FORMAT_VERSION:
        raise ConfigError(
            f"an object file has format version {fmt}; this pocketlib reads up to "
            f"{FORMAT_VERSION}: it was written by a newer one"
        )
    end = _FIXED.size + job_len + key_len
    if end > len(raw) or end > HEADER_SIZE:
        raise _Damaged("header names are longer than the header")
    if value_checksum(raw[16:end]) != header_checksum:
        raise _Damaged("header checksum mismatch")
    try:
        job = raw[_FIXED.size : _FIXED.size + job_len].decode()
        key = raw[_FIXED.size + job_len : end].decode()
    except UnicodeDecodeError:
        raise _Damaged("job or key is not UTF-8") from None
    return _Header(job, key, size, checksum, data_checksum, flags, version, created, expires)


def _name_for(job: str, key: str) -> str:
    """The file name an object of ``job`` and ``key`` is stored under (before collisions)."""
    raw_job = job.encode()
    digest = hashlib.blake2b(len(raw_job).to_bytes(2, "little") + raw_job, digest_size=16)
    digest.update(key.encode())
    return digest.hexdigest()


def _charge(nbytes: int) -> int:
    return HEADER_SIZE + -(-nbytes // BLOCK) * BLOCK


def _os_failure(exc: OSError, what: str) -> PocketError:
    """The error a node reports for an OSError of the medium."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CapacityError(f"hdd tier: the disk is full ({what})")
    return ServerError(f"hdd tier: {what}: {exc.strerror or exc}")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) < size:  # a regular file gives all of it in one call unless it is short
        data += os.pread(fd, size - len(data), offset + len(data))
    return data


@dataclass(slots=True, eq=False)
class _Part:
    """One reservation's space: a memory buffer, a mapped temporary file, or (made by join) a
    temporary file already written and hashed, open for commit."""

    size: int
    buf: bytearray | None = None
    mm: mmap.mmap | None = None
    path: str | None = None
    view: memoryview | None = None
    fd: int | None = None
    data_checksum: int = 0
    #: Why a join could not write the value (commit raises it).
    error: PocketError | None = None

    def close(self) -> None:
        """Drop the buffer or mapping (views the caller still holds keep the mapping alive)."""
        if self.view is not None:
            with contextlib.suppress(BufferError):
                self.view.release()
        if self.mm is not None:
            with contextlib.suppress(BufferError):
                self.mm.close()
        self.view = self.mm = self.buf = None


@dataclass(slots=True, eq=False)
class _Stored:
    meta: ObjectMeta
    job: str
    key: str
    name: str
    charged: int
    data_checksum: int
    refs: int = 0
    dead: bool = False
    #: (inode, size, mtime, ctime) of the file when its value last matched its checksum.
    verified: tuple[int, int, int, int] | None = None


class _JobIndex:
    __slots__ = ("objects", "sorted_keys", "used")

    def __init__(self) -> None:
        self.objects: dict[str, _Stored] = {}
        self.sorted_keys: list[str] | None = None
        self.used = 0


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


class HddTier(TierDriver):
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
        self._deferred: list[int] = []
        self._to_close: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closer: threading.Thread | None = None
        self._jobs: dict[str, _JobIndex] = {}
        self._names: dict[str, _Stored] = {}
        self._expiry: list[tuple[float, int, str, str]] = []
        self._capacity = capacity
        self._used = 0
        self._peak = 0
        self._objects = 0
        self._in_memory = 0
        self._version = 0
        self._version_ceiling = 0
        self._temp_seq = itertools.count()
        self._closed = False
        self.recovered = 0
        self.dropped = 0
        self.removed_temps = 0
        self.checksum_errors = 0

        if not os.path.lexists(self.path):
            # Nothing stored yet: refuse a capacity the disk cannot hold before creating anything.
            parent = os.path.dirname(self.path)
            while not os.path.lexists(parent):
                parent = os.path.dirname(parent)
            self._check_space(parent)
        try:
            for d in (self.path, self._objects_dir, self._tmp_dir, self._corrupt_dir):
                os.makedirs(d, exist_ok=True)
            self._lock_fd = os.open(
                os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.path} for the hdd tier: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise ConfigError(f"{self.path} is in use by another node") from None
        try:
            self._start()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        if path is None:
            raise ConfigError("the hdd tier needs --path DIR")
        return cls(capacity, path)

    @property
    def capacity(self) -> int:
        return self._capacity

    @staticmethod
    def charge_for(nbytes: int) -> int:
        """Bytes a value of ``nbytes`` is charged: the header plus the value in whole blocks."""
        return _charge(nbytes)

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
        if self._used > self._capacity:
            print(
                f"pocket hdd tier: {self._used} bytes stored in {self.path} exceed the capacity "
                f"{self._capacity}; new puts are refused until objects are deleted",
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
        if self._capacity > free + self._used:
            stored = f" (besides {self._used} bytes already stored)" if self._used else ""
            raise ConfigError(
                f"{self.path} has {free} bytes free{stored}, too few for a capacity of "
                f"{self._capacity}; lower --capacity or free space"
            )

    def _recover(self) -> None:
        """Rebuild the index from the object files; remove what a crash left in tmp/."""
        for entry in os.scandir(self._tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            self.removed_temps += 1
        try:
            with open(self._version_path, "rb") as f:
                self._version = int(f.read().strip() or b"0")
        except FileNotFoundError:
            pass
        except ValueError:
            self._version = 0
        now = time.time()
        found: dict[tuple[str, str], tuple[_Header, str]] = {}
        for entry in os.scandir(self._objects_dir):
            try:
                header = self._check_file(entry.path)
            except _Damaged as exc:
                self._move_aside(entry.name, str(exc))
                self.dropped += 1
                continue
            self._version = max(self._version, header.version)
            if header.expires and header.expires <= now:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            ident = (header.job, header.key)
            other = found.get(ident)
            if other is not None:
                # Two files for one key (a delete lost to power loss): the newer one wins.
                if other[0].version > header.version:
                    os.unlink(entry.path)
                    continue
                os.unlink(os.path.join(self._objects_dir, other[1]))
            found[ident] = (header, entry.name)
        for header, name in sorted(found.values(), key=lambda item: item[0].version):
            meta = ObjectMeta(
                header.size, header.checksum, header.flags, header.version, header.created,
                header.expires,
            )  # fmt: skip
            stored = _Stored(
                meta, header.job, header.key, name, _charge(header.size), header.data_checksum
            )
            self._insert(stored)
            self._used += stored.charged
        self._peak = self._used
        self.recovered = len(found)

    def _check_file(self, path: str) -> _Header:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _Damaged(f"cannot be opened: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise _Damaged("not a regular file")
            header = _parse_header(os.pread(fd, HEADER_SIZE, 0))
            if st.st_size != HEADER_SIZE + header.size:
                raise _Damaged(
                    f"file is {st.st_size} bytes, its header says {HEADER_SIZE + header.size}"
                )
            if header.size <= self._recovery_verify_max:
                data = _pread_all(fd, header.size, HEADER_SIZE)
                if value_checksum(data) != header.data_checksum:
                    raise _Damaged("value does not match its checksum")
            return header
        finally:
            os.close(fd)

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
        ceiling = self._version + _VERSION_STEP
        tmp = self._version_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"%d\n" % ceiling)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._version_path)
        self._fsync_dir(self.path)
        self._version_ceiling = ceiling

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- write path ---------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> Reservation:
        if nbytes < 0:
            raise ValueError("negative size")
        charged = _charge(nbytes)
        with self._locked:
            self._take(nbytes, charged)
            in_memory = nbytes <= min(self._buffer_max, self._memory_budget - self._in_memory)
            if in_memory:
                self._in_memory += nbytes
        try:
            part = self._new_part(nbytes, in_memory)
        except BaseException:
            with self._locked:
                self._used -= charged
                if in_memory:
                    self._in_memory -= nbytes
            raise
        buffers = [part.view] if part.view is not None else []
        return Reservation(nbytes, buffers, charged, [part])

    def _take(self, nbytes: int, charged: int) -> None:
        """Charge space (lock held); CapacityError if it is not there."""
        if self._closed:
            raise ServerError("the hdd tier is closed")
        free = self._capacity - self._used
        if charged > free:
            raise CapacityError(
                f"hdd tier is full: {nbytes} bytes ({charged} with header) requested, "
                f"{max(free, 0)} of {self._capacity} free"
            )
        self._used += charged
        if self._used > self._peak:
            self._peak = self._used

    def _new_part(self, nbytes: int, in_memory: bool) -> _Part:
        if nbytes == 0:
            return _Part(0)
        if in_memory:
            buf = bytearray(nbytes)
            return _Part(nbytes, buf=buf, view=memoryview(buf))
        # Beyond the memory budget: a preallocated temporary file, mapped. Preallocated, so a
        # disk that fills up fails here rather than with SIGBUS on a write to the mapping.
        fd, path = self._create_temp()
        try:
            os.posix_fallocate(fd, 0, HEADER_SIZE + nbytes)
            mm = mmap.mmap(fd, HEADER_SIZE + nbytes)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise _os_failure(exc, "cannot reserve space for a value") from exc
        os.close(fd)  # the mapping holds the file
        with memoryview(mm) as whole:
            view = whole[HEADER_SIZE:]
        return _Part(nbytes, mm=mm, path=path, view=view)

    def _create_temp(self) -> tuple[int, str]:
        while True:
            path = os.path.join(self._tmp_dir, f"{os.getpid()}-{next(self._temp_seq)}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_failure(exc, "cannot create a temporary file") from exc
            return fd, path

    def abort(self, res: Reservation) -> None:
        with self._locked:
            if res.done:
                return
            res.done = True
            self._used -= res.charged
            self._in_memory -= _memory_of(res.loc)
        _discard(res.loc)

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
        locs: list[_Part] = [part for p in parts for part in p.loc]
        size = sum(p.size for p in parts)
        charged = sum(p.charged for p in parts)
        memory = _memory_of(locs)
        joined = _Part(size)
        try:
            joined.fd, joined.path, joined.data_checksum = self._write_value(locs)
        except PocketError as exc:
            joined.error = exc
        except BaseException:
            with self._locked:
                self._used -= charged
                self._in_memory -= memory
            _discard(locs)
            raise
        with self._locked:
            self._in_memory -= memory
        if joined.error is not None:
            _discard(locs)
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
            names = _header_names(job, key)
        except InvalidKeyError:
            self.abort(res)
            raise
        with self._locked:
            if res.done:
                raise ValueError("reservation already committed or aborted")
            res.done = True
        parts: list[_Part] = res.loc
        joined = parts[0] if len(parts) == 1 else None
        if joined is not None and joined.error is not None:
            with self._locked:
                self._used -= res.charged
            raise joined.error
        if joined is not None and joined.fd is not None and joined.path is not None:
            # Written and hashed by join: only the header and the rename are left.
            fd, path, data_checksum, memory = joined.fd, joined.path, joined.data_checksum, 0
            joined.close()
            joined.fd = joined.path = None
        else:
            memory = _memory_of(parts)
            try:
                fd, path, data_checksum = self._write_value(parts)
            except BaseException:
                with self._locked:
                    self._used -= res.charged
                    self._in_memory -= memory
                _discard(parts)
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
        names = _header_names(job, key)
        nbytes = len(view)
        charged = _charge(nbytes)
        data_checksum = value_checksum(view)
        with self._locked:
            self._take(nbytes, charged)
        try:
            fd, path = self._create_temp()
            try:
                _pwrite_all(fd, view, HEADER_SIZE)
                if self.sync:
                    os.fdatasync(fd)
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise _os_failure(exc, "cannot write a value") from exc
        except BaseException:
            with self._locked:
                self._used -= charged
            raise
        return self._publish(
            fd, path, job, key, names, nbytes, charged, 0,
            data_checksum if checksum is None else checksum, data_checksum, flags, ttl,
        )  # fmt: skip

    def _write_value(self, parts: list[_Part]) -> tuple[int, str, int]:
        """Write the parts' bytes, in order, to one temporary file after the header's space;
        returns the open file, its path and the checksum of the bytes written."""
        hasher = Hasher()
        first = parts[0] if parts else None
        if first is not None and first.mm is not None and first.path is not None:
            # Already in a file of its own: the object is that file, later parts appended.
            path = first.path
            assert first.view is not None
            hasher.update(first.view)
            first.close()
            first.path = None  # it becomes the object: not to be removed with the parts
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise _os_failure(exc, "cannot reopen a temporary file") from exc
            offset = HEADER_SIZE + first.size
            rest = parts[1:]
        else:
            fd, path = self._create_temp()
            offset = HEADER_SIZE
            rest = parts
        try:
            for part in rest:
                if part.size == 0:
                    continue
                assert part.view is not None
                hasher.update(part.view)
                if part.buf is not None:
                    _pwrite_all(fd, part.view, offset)
                else:
                    self._append_file(part, fd, offset)
                offset += part.size
                part.close()
                if part.path is not None:
                    os.unlink(part.path)  # its bytes are in the object now: free its blocks
                    part.path = None
            if self.sync:
                os.fdatasync(fd)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            if isinstance(exc, OSError):
                raise _os_failure(exc, "cannot write a value") from exc
            raise
        return fd, path, hasher.intdigest()

    @staticmethod
    def _append_file(part: _Part, fd: int, offset: int) -> None:
        """Copy a mapped part's value from its temporary file into ``fd`` at ``offset``: in the
        kernel (copy_file_range), so a value larger than memory never passes through ours."""
        assert part.path is not None
        assert part.view is not None
        src = os.open(part.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            done = 0
            while done < part.size:
                try:
                    n = os.copy_file_range(
                        src, fd, min(part.size - done, _COPY_CHUNK),
                        HEADER_SIZE + done, offset + done,
                    )  # fmt: skip
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    n = 0
                if n == 0:  # not supported here: write it from the mapping instead
                    _pwrite_all(fd, part.view[done:], offset + done)
                    return
                done += n
        finally:
            os.close(src)

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
                    if self._version >= self._version_ceiling:
                        self._raise_version_ceiling()
                    version = self._version + 1
                    header = _pack_header(
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
                    self._used -= charged
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    if isinstance(exc, OSError):
                        raise _os_failure(exc, "cannot commit a value") from exc
                    raise
                self._version = version
                meta = ObjectMeta(size, checksum, flags, version, now, expires)
                self._insert(_Stored(meta, job, key, name, charged, data_checksum))
            if self.sync:
                os.fsync(fd)
                self._fsync_dir(self._objects_dir)
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
    _name_base = staticmethod(_name_for)

    # -- read path ----------------------------------------------------------------------------
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        with self._locked:
            stored = self._find(job, key)
            fd = self._open(stored)
            stored.refs += 1
            if take:
                self._remove(job, key)
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
            stored = self._find(job, key)
            if stored.meta.size > limit:
                return None
            fd = self._open(stored)
            if take:
                self._remove(job, key)
        try:
            return stored.meta, self._read_verified(fd, stored)
        finally:
            os.close(fd)

    def _open(self, stored: _Stored) -> int:
        """Open the object's file (lock held, so it is the file the index names)."""
        try:
            return os.open(os.path.join(self._objects_dir, stored.name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # removed behind the tier's back
                self._remove(stored.job, stored.key)
                raise NotFoundError(
                    f"object {stored.key!r} in job {stored.job!r}: its file is gone"
                ) from None
            raise _os_failure(exc, f"cannot open the file of {stored.key!r}") from exc

    def _read_verified(self, fd: int, stored: _Stored) -> bytes:
        size = stored.meta.size
        try:
            data = _pread_all(fd, size, HEADER_SIZE) if size else b""
        except OSError as exc:
            raise _os_failure(exc, f"cannot read {stored.key!r}") from exc
        if len(data) != size:
            self._damaged(stored, f"its file is short by {size - len(data)} bytes")
        if value_checksum(data) != stored.data_checksum:
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
            raise _os_failure(exc, f"cannot map {stored.key!r}") from exc
        mm.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(mm) as whole:
            view = whole[HEADER_SIZE:]
        state = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if size <= self._verify_max or stored.verified != state:
            if value_checksum(view) != stored.data_checksum:
                view.release()
                mm.close()
                self._damaged(stored, "its bytes do not match their checksum")
            # Remembered only once the file is a second old: a later change then gets a new
            # mtime or ctime even where the clock is coarse.
            if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > 1.0:
                stored.verified = state
        return mm, view

    def _damaged(self, stored: _Stored, reason: str) -> NoReturn:
        """A value cannot be trusted: move its file aside and raise ChecksumError."""
        with self._locked:
            self.checksum_errors += 1
            if self._names.get(stored.name) is stored:
                index = self._jobs[stored.job]
                del index.objects[stored.key]
                index.sorted_keys = None
                del self._names[stored.name]
                self._unlink(index, stored)
                self._move_aside(stored.name, reason)
        raise ChecksumError(
            f"object {stored.key!r} in job {stored.job!r} is damaged on disk: {reason}"
        )

    def _release(self, handle: _LeaseHandle) -> None:
        stored = handle.stored
        with self._locked:
            stored.refs -= 1
            if stored.dead and stored.refs == 0:
                self._used -= stored.charged
        for view in handle.views:
            with contextlib.suppress(BufferError):
                view.release()
        if handle.mm is not None:
            with contextlib.suppress(BufferError):  # views the caller kept hold the mapping
                handle.mm.close()

    def stat(self, job: str, key: str) -> ObjectMeta:
        with self._locked:
            return self._find(job, key).meta

    # -- deletes, listing ---------------------------------------------------------------------
    def delete(self, job: str, key: str) -> bool:
        with self._locked:
            index = self._jobs.get(job)
            if index is None or key not in index.objects:
                return False
            self._remove(job, key)
            return True

    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        now = time.time()
        with self._locked:
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
        with self._locked:
            index = self._jobs.get(job)
            if index is None:
                return 0
            doomed = [k for k in index.objects if k.startswith(prefix)]
            for key in doomed:
                self._remove(job, key)
            return len(doomed)

    def delete_job(self, job: str) -> int:
        with self._locked:
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
        with self._locked:
            while self._expiry and self._expiry[0][0] <= now:
                _, version, job, key = heapq.heappop(self._expiry)
                index = self._jobs.get(job)
                stored = index.objects.get(key) if index else None
                if stored is not None and stored.meta.version == version:
                    self._remove(job, key)
                    count += 1
        return count

    def stats(self) -> TierStats:
        with self._locked:
            return TierStats(
                tier=self.name,
                capacity=self._capacity,
                used=self._used,
                peak_used=self._peak,
                objects=self._objects,
                used_by_job={j: ix.used for j, ix in self._jobs.items() if ix.objects},
                objects_by_job={j: len(ix.objects) for j, ix in self._jobs.items() if ix.objects},
                counters={
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
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

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

    def _insert(self, stored: _Stored) -> None:
        """Index ``stored``; the object it replaces (same key) is unlinked, file and all."""
        index = self._jobs.get(stored.job)
        if index is None:
            index = self._jobs[stored.job] = _JobIndex()
        old = index.objects.get(stored.key)
        if old is None:
            index.sorted_keys = None
        else:
            del self._names[old.name]
            self._delete_file(old)
            self._unlink(index, old)
        index.objects[stored.key] = stored
        self._names[stored.name] = stored
        index.used += stored.charged
        self._objects += 1
        if stored.meta.expires:
            expiry = (stored.meta.expires, stored.meta.version, stored.job, stored.key)
            heapq.heappush(self._expiry, expiry)

    def _remove(self, job: str, key: str) -> None:
        """Delete an object: out of the index, its file unlinked (leases keep it readable)."""
        index = self._jobs[job]
        stored = index.objects.pop(key)
        index.sorted_keys = None
        del self._names[stored.name]
        self._delete_file(stored)
        self._unlink(index, stored)

    def _delete_file(self, stored: _Stored) -> None:
        # No POSIX_FADV_DONTNEED first: on a file still dirty it starts writing the value to
        # disk, only to free it; unlinking drops its pages unwritten (docs/tiers.md).
        self._defer_free(stored.name, stored.meta.size)
        try:
            os.unlink(os.path.join(self._objects_dir, stored.name))
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

    def _unlink(self, index: _JobIndex, stored: _Stored) -> None:
        index.used -= stored.charged
        self._objects -= 1
        stored.dead = True
        if stored.refs == 0:
            self._used -= stored.charged


def _header_names(job: str, key: str) -> tuple[bytes, bytes]:
    """Job and key as stored in a header; InvalidKeyError if they do not fit in one."""
    raw_job, raw_key = job.encode(), key.encode()
    if len(raw_job) + len(raw_key) > _MAX_NAMES:
        raise InvalidKeyError(
            f"job and key are {len(raw_job) + len(raw_key)} bytes; the hdd tier stores at "
            f"most {_MAX_NAMES}"
        )
    return raw_job, raw_key


def _close_files(fds: queue.SimpleQueue[int | None]) -> None:
    """The closing thread: close each file until told to stop."""
    while (fd := fds.get()) is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _memory_of(parts: list[_Part]) -> int:
    return sum(p.size for p in parts if p.buf is not None)


def _discard(parts: list[_Part]) -> None:
    for part in parts:
        part.close()
        if part.fd is not None:
            os.close(part.fd)
            part.fd = None
        if part.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(part.path)
            part.path = None
