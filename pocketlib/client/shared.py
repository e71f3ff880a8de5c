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

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..bodies import Entry, decode_extents
from ..connection import Connection
from ..errors import ChecksumError, PocketError, RequestError
from ..protocol import Flag, Op, ResponseHeader, checksum, pack_request
from .arena import SharedArena, SharedBuffer

if TYPE_CHECKING:
    from .calls import ClientCalls

__all__ = ["BytesReader", "buffer", "get", "put", "put_filled", "take_entries"]


# -- operations through the arena (called by Job when the node's arena is mapped) -----------


def get(
    client: ClientCalls,
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
            conn.send((_release_frame(conn, job, token, h.request_id),))
        return h.size

    rid = next(client._ids) & 0xFFFFFFFF
    head = pack_request(Op.SHM_GET, rid, flags, job, token, key, 0, 0, 0, 0, 0, version)
    return client.exchange(node, (head,), rid, read, retry=not flags & Flag.DELETE_AFTER_READ)


class BytesReader:
    """Reads SHM_GET answers as bytes: one per job and node, so a get allocates no closure
    (small values are most gets, and they come inline, as a GET's would)."""

    __slots__ = ("arena", "client", "job", "token")

    def __init__(self, client: ClientCalls, arena: SharedArena, job: bytes, token: bytes) -> None:
        self.client, self.arena, self.job, self.token = client, arena, job, token

    def __call__(self, conn: Connection, h: ResponseHeader) -> bytes:
        if not h.flags & Flag.SHARED:
            return conn.read_value(h)
        extents = decode_extents(conn.read_body(h.length))
        arena = self.arena
        try:
            return arena.copy_verified(extents, lambda: arena.read(extents), h.checksum)
        finally:
            conn.send((_release_frame(conn, self.job, self.token, h.request_id),))


def take_entries(
    conn: Connection,
    arena: SharedArena,
    entries: list[Entry],
    prefix: tuple[bytes, bytes],
    request_id: int,
) -> None:
    """The entries of a MULTI_GET answer flagged SHARED, replaced in ``entries`` by their
    values: each copied out of the arena and checked against its checksum while the node
    holds its lease, then all the answer's leases given back with one SHM_RELEASE (one-way,
    on the same connection)."""
    shared = [i for i, e in enumerate(entries) if not e.status and e.flags & Flag.SHARED]
    if not shared:
        return
    job, token = prefix
    try:
        for i in shared:
            e = entries[i]
            extents = decode_extents(memoryview(e.value))
            value = arena.copy_verified(extents, functools.partial(arena.read, extents),
                                        e.checksum)  # fmt: skip
            entries[i] = e._replace(value=value, flags=e.flags & ~Flag.SHARED)
    finally:
        conn.send((_release_frame(conn, job, token, request_id),))


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
    client: ClientCalls,
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
    client: ClientCalls,
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
    client: ClientCalls,
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
    client: ClientCalls,
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
            conn.send((_release_frame(conn, job, token, rid),))
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


def _release_frame(conn: Connection, job: bytes, token: bytes, held: int) -> bytes:
    """SHM_RELEASE of what request ``held`` holds (one-way: its own id is never answered)."""
    return pack_request(Op.SHM_RELEASE, conn.next_id(), 0, job, token, b"", 0, 0, 0, held, 0, 0)
