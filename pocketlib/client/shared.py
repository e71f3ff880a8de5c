"""The client's half of the co-located path: reading and writing a node's tier in place.

When a node's tier is a file another process can map (DRAM in /dev/shm, NVMe's data file) and
the client runs on the same host, the client maps that file and moves values with a memory
copy instead of through the socket; the socket carries only where the value is (see
:mod:`pocketlib.node.shared`). It is negotiated once per node and process: the node reports
the file's path, device, inode and the host's boot id, and the client uses the path only if
all of them match what it sees. It is off where there is no such file (AWS Lambda has no
/dev/shm; the DRAM tier then uses anonymous memory), when the node is on another host, and
when ``POCKET_SHARED_MEMORY=0``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..connection import Connection
from ..errors import ChecksumError, PocketError, RequestError
from ..protocol import Flag, Hasher, Op, ResponseHeader, checksum, decode_extents, pack_request
from ..transport import boot_id

if TYPE_CHECKING:
    from .client import Client

_T = TypeVar("_T")
#: Values from this size are hashed on a second thread while they are copied.
_PARALLEL_HASH_MIN = 4 * 1024 * 1024
#: madvise(MADV_POPULATE_WRITE), Linux 5.14 (the mmap module may have no name for it; 23 is
#: its number in the generic Linux headers that x86-64 and arm64 use).
_POPULATE_WRITE: int | None = getattr(
    mmap,
    "MADV_POPULATE_WRITE",
    23 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None,
)
#: The arena is prefaulted for writing in chunks of this size, each once per process.
_PREFAULT_CHUNK = 64 * 1024

__all__ = [
    "BytesReader",
    "SharedArena",
    "SharedBuffer",
    "buffer",
    "get",
    "open_arena",
    "put",
    "put_filled",
]


class SharedArena:
    """A node's tier file, mapped into this process."""

    def __init__(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.view = memoryview(self._map)
        self.path = path
        self._size = size
        # Chunks this process has written to (their pages are mapped writable here).
        self._written = bytearray(-(-size // _PREFAULT_CHUNK))
        self._populate = _POPULATE_WRITE

    def read_into(self, extents: list[tuple[int, int]], target: memoryview) -> None:
        """Copy the value at ``extents`` into ``target`` (which holds exactly its size)."""
        pos = 0
        view = self.view
        for offset, length in extents:
            target[pos : pos + length] = view[offset : offset + length]
            pos += length

    def read(self, extents: list[tuple[int, int]]) -> bytes:
        """A copy of the value at ``extents``."""
        if len(extents) == 1:
            offset, length = extents[0]
            return self.view[offset : offset + length].tobytes()
        return b"".join(self.view[o : o + n] for o, n in extents)

    def hash_of(self, extents: list[tuple[int, int]]) -> int:
        """The checksum of the value at ``extents``, read straight from the mapping."""
        if len(extents) == 1:
            offset, length = extents[0]
            return checksum(self.view[offset : offset + length])
        hasher = Hasher()
        for offset, length in extents:
            hasher.update(self.view[offset : offset + length])
        return hasher.intdigest()

    def copy_verified(
        self, extents: list[tuple[int, int]], copy: Callable[[], _T], expected: int
    ) -> _T:
        """Run ``copy`` (of the value at ``extents``) and check the value's checksum.

        A large value is hashed from the mapping on a second thread while this one copies:
        the hash releases the GIL, the copy holds it, and a leased value cannot change, so the
        two passes overlap on two cores instead of following each other.
        """
        size = sum(n for _, n in extents)
        if size < _PARALLEL_HASH_MIN:
            result = copy()
            digest = self.hash_of(extents)
        else:
            found: list[int] = []
            worker = threading.Thread(target=lambda: found.append(self.hash_of(extents)))
            worker.start()
            try:
                result = copy()
            finally:
                worker.join()
            digest = found[0] if found else -1
        if digest != expected:
            raise ChecksumError("checksum mismatch reading a value from shared memory")
        return result

    def write(self, extents: list[tuple[int, int]], data: memoryview) -> None:
        """Copy ``data`` into reserved ``extents``."""
        pos = 0
        view = self.view
        for offset, length in extents:
            self._prefault(offset, length)
            view[offset : offset + length] = data[pos : pos + length]
            pos += length

    def _prefault(self, offset: int, length: int) -> None:
        """Map the pages under ``[offset, offset + length)`` writable in one system call, the
        first time this process writes to their chunks. The node's pages are not mapped in
        this process until it touches them, and a first write costs a fault per 4 KiB page
        (1.7 us each measured on a VM, 0.6 us when prefaulted together)."""
        first, end = offset // _PREFAULT_CHUNK, -(-(offset + length) // _PREFAULT_CHUNK)
        written, populate = self._written, self._populate
        if populate is None or written.find(0, first, end) < 0:
            return
        start = first * _PREFAULT_CHUNK
        try:
            self._map.madvise(populate, start, min(end * _PREFAULT_CHUNK, self._size) - start)
        except (OSError, ValueError):
            self._populate = None  # a kernel before 5.14: fault page by page, as before
            return
        written[first:end] = b"\x01" * (end - first)

    def close(self) -> None:
        """Unmap (views handed out keep the mapping alive until they are released)."""
        with contextlib.suppress(BufferError):
            self.view.release()
            self._map.close()


def open_arena(info: dict[str, Any]) -> SharedArena | None:
    """Map the node's tier file if it is this host's and this process may; else None."""
    if os.environ.get("POCKET_SHARED_MEMORY", "1") == "0":
        return None
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # no /dev/shm there, nor a node's host
        return None
    path = info.get("path")
    if not path or info.get("boot_id") != boot_id() or not boot_id():
        return None
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) != (info.get("dev"), info.get("ino")):
            return None  # the same name on another host, or in another mount namespace
        return SharedArena(path, int(info["size"]))
    except (OSError, ValueError, KeyError):
        return None


class SharedBuffer:
    """A read-only view of a stored value, valid until :meth:`release` (or ``with`` exits).

    While it is held, the node keeps the value's space from being reused, so the bytes stay
    those of the value that was read, even if its key is deleted or overwritten meanwhile.
    """

    def __init__(self, view: memoryview, release: Callable[[], None] | None = None) -> None:
        self.view = view
        self._release = release

    def __len__(self) -> int:
        return len(self.view)

    def __bytes__(self) -> bytes:
        return self.view.tobytes()

    def __buffer__(self, flags: int) -> memoryview:  # the buffer protocol (Python 3.12+)
        return self.view

    @property
    def leased(self) -> bool:
        """Whether this is the node's own memory, held until released (not a copy)."""
        return self._release is not None

    def release(self) -> None:
        """Let the node reuse the value's space. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            self.view.release()
            release()

    def __enter__(self) -> SharedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


# -- operations through the arena (called by Job when the node's arena is mapped) -----------


def get(
    client: Client,
    arena: SharedArena,
    node: str,
    prefix: tuple[bytes, bytes, int],
    key: bytes,
    flags: int,
    into: memoryview | None = None,
) -> tuple[ResponseHeader, bytes | int]:
    """SHM_GET: the value (or its length, read ``into`` a buffer), copied out of the arena.

    Small values come inline; larger ones are copied from the arena under a lease that is
    given back (one-way, on the same connection) once the copy is checked.
    """
    job, token, version = prefix

    def read(conn: Connection, h: ResponseHeader) -> bytes | int:
        # A compressed value is returned as bytes for the caller to decompress.
        target = None if h.flags & Flag.LZ4 else into
        if not h.flags & Flag.SHARED:
            return _inline(conn, h, target, key)
        extents = decode_extents(conn.read_body(h.length))
        try:
            if target is None:
                return arena.copy_verified(extents, lambda: arena.read(extents), h.checksum)
            if h.size > len(target):
                raise RequestError(f"{key!r} is {h.size} bytes; the buffer holds {len(target)}")
            dest = target[: h.size]
            arena.copy_verified(extents, lambda: arena.read_into(extents, dest), h.checksum)
        finally:
            conn.send((_release_frame(client, job, token, h.request_id),))
        return h.size

    rid = next(client._ids) & 0xFFFFFFFF
    head = pack_request(Op.SHM_GET, rid, flags, job, token, key, 0, 0, 0, 0, 0, version)
    return client.exchange(node, (head,), rid, read, retry=not flags & Flag.DELETE_AFTER_READ)


class BytesReader:
    """Reads SHM_GET answers as bytes: one per job and node, so a get allocates no closure
    (small values are most gets, and they come inline, as a GET's would)."""

    __slots__ = ("arena", "client", "job", "token")

    def __init__(self, client: Client, arena: SharedArena, job: bytes, token: bytes) -> None:
        self.client, self.arena, self.job, self.token = client, arena, job, token

    def __call__(self, conn: Connection, h: ResponseHeader) -> bytes:
        if not h.flags & Flag.SHARED:
            return conn.read_value(h)
        extents = decode_extents(conn.read_body(h.length))
        arena = self.arena
        try:
            return arena.copy_verified(extents, lambda: arena.read(extents), h.checksum)
        finally:
            conn.send((_release_frame(self.client, self.job, self.token, h.request_id),))


def _inline(
    conn: Connection, h: ResponseHeader, into: memoryview | None, key: bytes
) -> bytes | int:
    if into is None:
        return conn.read_value(h)
    if h.length > len(into):
        conn.drain(h.length)
        raise RequestError(f"{key!r} is {h.length} bytes; the buffer holds {len(into)}")
    conn.read_into(into[: h.length])
    if checksum(into[: h.length]) != h.checksum:
        raise ChecksumError(f"checksum mismatch reading {key!r}")
    return h.length


def put(
    client: Client,
    arena: SharedArena,
    node: str,
    prefix: tuple[bytes, bytes, int],
    key: bytes,
    data: memoryview,
    flags: int,
    ttl_ms: int,
    value_checksum: int | None = None,
) -> bytes | None:
    """SHM_RESERVE, a copy into the arena, SHM_COMMIT: on one connection, which holds the
    reservation until the commit (the node frees it if the connection breaks first).

    Without ``value_checksum`` the value is hashed while the node answers SHM_RESERVE, so the
    hash hides behind that round trip instead of adding to it.

    Returns the manifest of the striped value the put replaced, if it asked (flag REPLACED)."""

    def hashed() -> int:
        return checksum(data) if value_checksum is None else value_checksum

    def fill(extents: list[tuple[int, int]], digest: int) -> int:
        arena.write(extents, data)
        return digest

    return _reserved_put(client, arena, node, prefix, key, len(data), hashed, fill, flags, ttl_ms)


def put_filled(
    client: Client,
    arena: SharedArena,
    node: str,
    prefix: tuple[bytes, bytes, int],
    key: bytes,
    size: int,
    fill: Callable[[memoryview], None],
    flags: int,
    ttl_ms: int,
) -> bytes | None:
    """As :func:`put`, for a value of ``size`` bytes that ``fill(view)`` writes into a
    writable ``view`` of exactly that size: the reserved space itself when it is one piece
    (the value is produced straight into the node's memory, no copy), else a scratch buffer
    copied in. The value is hashed from the arena after it is written."""

    def write(extents: list[tuple[int, int]], _: int) -> int:
        if len(extents) == 1:
            offset, length = extents[0]
            arena._prefault(offset, length)
            view = arena.view[offset : offset + length]
            fill(view)
            return checksum(view)
        scratch = memoryview(bytearray(size))
        fill(scratch)
        arena.write(extents, scratch)
        return checksum(scratch)

    return _reserved_put(client, arena, node, prefix, key, size, lambda: 0, write, flags, ttl_ms)


def _reserved_put(
    client: Client,
    arena: SharedArena,
    node: str,
    prefix: tuple[bytes, bytes, int],
    key: bytes,
    size: int,
    early: Callable[[], int],
    write: Callable[[list[tuple[int, int]], int], int],
    flags: int,
    ttl_ms: int,
) -> bytes | None:
    """SHM_RESERVE of ``size`` bytes; ``early()`` while the node answers; ``write(extents,
    early's result)`` (returns the value's checksum); SHM_COMMIT."""
    job, token, version = prefix
    pool = client.pools[node]
    conn = pool.acquire()
    # From the reserve to the commit the node holds space for this connection, and until its
    # answer is read the connection is out of step: an error then (``fill`` may raise anything)
    # closes the connection, which is what makes the node give the space back.
    holding = False
    try:
        rid = next(client._ids) & 0xFFFFFFFF
        reserve = pack_request(Op.SHM_RESERVE, rid, 0, job, token, b"", 0, size, 0, 0, 0, version)
        conn.send((reserve,))
        holding = True
        digest = early()
        try:
            h = conn.read_header(rid)
        except PocketError:
            holding = False  # refused (full, draining, stale): answered, nothing reserved
            raise
        value_checksum = write(decode_extents(conn.read_body(h.length)), digest)
        done = next(client._ids) & 0xFFFFFFFF
        frame = pack_request(
            Op.SHM_COMMIT, done, flags, job, token, key, 0, size, ttl_ms, rid, value_checksum,
            version,
        )  # fmt: skip
        conn.send((frame,))
        holding = False
        h = conn.read_header(done)
        body = conn.read_body(h.length)
    except BaseException as exc:
        if holding:
            conn.close()
        else:
            pool.discard_or_release(conn, exc)
        raise
    pool.release(conn)
    return body if h.flags & Flag.STRIPED else None


def buffer(
    client: Client,
    arena: SharedArena,
    node: str,
    prefix: tuple[bytes, bytes, int],
    key: bytes,
    flags: int = 0,
    verify: bool = True,
) -> tuple[SharedBuffer, int]:
    """A zero-copy, read-only view of the stored value, leased until the buffer is released;
    and the value's flags (it may be compressed). ``verify=False`` skips checking the value
    against its checksum (a pass over every byte) for a single-piece view of the mapping."""
    job, token, version = prefix
    pool = client.pools[node]
    conn = pool.acquire()
    try:
        rid = next(client._ids) & 0xFFFFFFFF
        conn.send((pack_request(Op.SHM_GET, rid, flags, job, token, key, 0, 0, 0, 0, 0, version),))
        h = conn.read_header(rid)
        if not h.flags & Flag.SHARED:
            value = conn.read_value(h)
            pool.release(conn)
            return SharedBuffer(memoryview(value)), h.flags
        extents = decode_extents(conn.read_body(h.length))
    except BaseException as exc:
        pool.discard_or_release(conn, exc)
        raise

    def release() -> None:
        try:
            conn.send((_release_frame(client, job, token, rid),))
        except PocketError:
            conn.close()  # the node frees the lease when the connection closes
            return
        pool.release(conn)

    if len(extents) == 1:
        offset, length = extents[0]
        view = arena.view[offset : offset + length].toreadonly()
    else:  # a value split over several blocks is not contiguous: copy it
        view = memoryview(arena.read(extents))
    if (verify or len(extents) != 1) and checksum(view) != h.checksum:
        release()
        raise ChecksumError(f"checksum mismatch reading {key!r} from shared memory")
    if len(extents) != 1:
        release()
        return SharedBuffer(view), h.flags
    return SharedBuffer(view, release), h.flags


def _release_frame(client: Client, job: bytes, token: bytes, held: int) -> bytes:
    rid = next(client._ids) & 0xFFFFFFFF
    return pack_request(Op.SHM_RELEASE, rid, 0, job, token, b"", 0, 0, 0, held, 0, 0)
