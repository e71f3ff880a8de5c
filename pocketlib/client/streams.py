"""Streaming writer and reader for values larger than memory.

A writer sends the value as STREAM_PUT chunks on one connection it holds for its lifetime; the
node stores each chunk as it arrives and makes the object visible only with the last chunk, so
an abandoned writer leaves nothing. A reader fetches byte ranges pinned to the object's version
and checks the whole value's checksum at the end.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..connection import Connection, NodePool
from ..errors import ChecksumError, ConflictError, PocketError, StaleTicketError
from ..protocol import Flag, Hasher, Op, ResponseHeader, checksum, encode_request

if TYPE_CHECKING:
    from typing_extensions import Buffer as AnyBuffer

    from .calls import ClientCalls

__all__ = ["ObjectReader", "ObjectWriter"]


class ObjectWriter(io.RawIOBase):
    """Write a value in chunks; it is stored when :meth:`close` returns."""

    def __init__(
        self,
        pool: NodePool,
        job: bytes,
        token: bytes,
        key: bytes,
        *,
        ttl_ms: int,
        chunk_size: int,
        map_version: int = 0,
        on_stale: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self._map_version = map_version
        #: Called when the node refuses the value as written under a stale ticket.
        self._on_stale = on_stale
        self._pool = pool
        self._conn: Connection | None = pool.acquire()
        self._rid = self._conn.next_id()
        self._job, self._token, self._key = job, token, key
        self._ttl_ms = ttl_ms
        self._chunk_size = max(64 * 1024, chunk_size)
        self._buf = bytearray()
        self._sent = 0
        self._hash = Hasher()

    def writable(self) -> bool:
        return True

    def write(self, data: AnyBuffer) -> int:
        """Buffer ``data``; full chunks go out as they fill."""
        if self._conn is None:
            raise ValueError("write to a closed writer")
        view = memoryview(data).cast("B")
        self._hash.update(view)
        if not self._buf and len(view) >= self._chunk_size:
            whole = len(view) - len(view) % self._chunk_size
            for pos in range(0, whole, self._chunk_size):
                self._send(view[pos : pos + self._chunk_size], more=True)
            view = view[whole:]
        self._buf += view
        while len(self._buf) >= self._chunk_size:
            self._send(memoryview(self._buf)[: self._chunk_size], more=True)
            del self._buf[: self._chunk_size]
        return len(data) if isinstance(data, (bytes, bytearray)) else view.nbytes

    def _send(self, chunk: memoryview | bytearray, *, more: bool) -> None:
        assert self._conn is not None
        head = encode_request(
            Op.STREAM_PUT, self._rid, self._job, self._token, self._key,
            flags=Flag.MORE if more else 0, offset=self._sent, length=len(chunk),
            ttl_ms=self._ttl_ms, arg=0 if more else self._hash.intdigest(),
            value_checksum=checksum(chunk), map_version=self._map_version,
        )  # fmt: skip
        try:
            self._conn.send([head, chunk])
        except BaseException:
            self.abort()
            raise
        self._sent += len(chunk)

    def close(self) -> None:
        """Send the last chunk and wait until the node has stored the whole value."""
        if self._conn is None:
            super().close()
            return
        conn = self._conn
        try:
            self._send(memoryview(self._buf), more=False)
            conn.read_header(self._rid)
        except PocketError as exc:
            self._conn = None
            if exc.status in (3, 4, 14, 15, 16):  # transport or protocol: out of step
                conn.close()
            else:
                self._pool.release(conn)
            if isinstance(exc, StaleTicketError) and self._on_stale is not None:
                self._on_stale()  # the next writer routes by the newer map
            raise
        except BaseException:
            self.abort()
            raise
        self._conn = None
        self._pool.release(conn)
        super().close()

    def abort(self) -> None:
        """Abandon the value: the connection is dropped and the node frees what it received."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class ObjectReader(io.RawIOBase):
    """Read a value by ranges; use through ``io.BufferedReader`` or with large reads."""

    def __init__(
        self,
        client: ClientCalls,
        node: str,
        job: bytes,
        token: bytes,
        key: bytes,
        size: int,
        version: int,
        value_checksum: int,
        chunk_size: int,
        map_version: int = 0,
    ) -> None:
        super().__init__()
        self._map_version = map_version
        self._client = client
        self._node = node
        self._job, self._token, self._key = job, token, key
        self.size = size
        self._version = version
        self._checksum = value_checksum
        self._pos = 0
        self._hash: Hasher | None = Hasher()
        self._chunk_size = chunk_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        new = max(0, base + offset)
        if new != self._pos:
            self._hash = None  # no longer sequential: only per-range checksums are checked
        self._pos = new
        return new

    def readinto(self, buffer: AnyBuffer) -> int:
        """Fill ``buffer`` from the current position, ``chunk_size`` bytes per request.

        Returns the bytes read: fewer than the buffer holds only at the end of the value.
        """
        target = memoryview(buffer).cast("B")
        total = 0
        while total < len(target) and self._pos < self.size:
            want = min(len(target) - total, self.size - self._pos, self._chunk_size)
            total += self._fetch(target[total : total + want])
        return total

    def readall(self) -> bytes:
        """The rest of the value."""
        out = bytearray(max(0, self.size - self._pos))
        n = self.readinto(out)
        del out[n:]
        return bytes(out)

    def _fetch(self, target: memoryview) -> int:
        """One ranged GET of ``len(target)`` bytes at the current position, pinned to the
        version the reader started with."""

        def read(conn: Connection, h: ResponseHeader) -> int:
            conn.read_into(target[: h.length])
            if checksum(target[: h.length]) != h.checksum:
                raise ChecksumError(f"checksum mismatch reading {self._key!r}")
            return h.length

        _, got = self._client.call(
            self._node, Op.GET, self._job, self._token, self._key, flags=Flag.RANGE,
            map_version=self._map_version,
            offset=self._pos, length=len(target), arg=self._version, read=read,
        )  # fmt: skip
        n = int(got)
        if n == 0:
            raise ConflictError(f"{self._key!r} shrank while it was being read")
        if self._hash is not None:
            self._hash.update(target[:n])
        self._pos += n
        if self._pos >= self.size and self._hash is not None:
            if self._hash.intdigest() != self._checksum:
                raise ChecksumError(f"checksum mismatch over the whole of {self._key!r}")
            self._hash = None
        return n
