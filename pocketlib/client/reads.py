"""A job's reads: get, get_into, get_range(s), get_buffer and stat, from whichever node holds
the key (the newest weight map's first, older maps' on a miss).

Every value is checked against the checksum its writer computed. A GET that answers with a
striped value's manifest goes on to its chunks (:mod:`pocketlib.client.stripes`); a compressed
value is decompressed; a node on this host is read through its mapped tier
(:mod:`pocketlib.client.shared`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..bodies import STAT_BODY
from ..connection import Connection
from ..errors import (
    ChecksumError,
    ConflictError,
    NotFoundError,
    RequestError,
    StaleTicketError,
    TransportError,
)
from ..protocol import Buffer, Flag, Op, ResponseHeader, checksum, decompress, validate_key
from . import ranges as byte_ranges
from . import shared, stripes
from .arena import SharedBuffer
from .base import JobBase, ObjectInfo, too_small

__all__ = ["Reads"]

_GET, _SHM_GET = int(Op.GET), int(Op.SHM_GET)
_LZ4, _DELETE_AFTER_READ, _STRIPED = Flag.LZ4, Flag.DELETE_AFTER_READ, Flag.STRIPED
#: Flags that make a GET answer more than the value itself: one test on the common path.
_SPECIAL = _LZ4 | _STRIPED
_read_value = Connection.read_value


class Reads(JobBase):
    """The read half of :class:`~pocketlib.client.job.Job`."""

    def get(self, key: str, *, delete_after_read: bool = False) -> bytes:
        """The value of ``key``; NotFoundError if absent.

        With ``delete_after_read`` the node frees the object in the same request.
        """
        if not self._single:
            if delete_after_read:  # an older copy must not resurface after this read
                return self._read(key, self._take_newest)
            return self._read(key, lambda n, r: self._get_at(n, r, False))
        raw = validate_key(key)
        before = self.ticket
        try:
            return self._get_at(self._node_for(raw), raw, delete_after_read)
        except (TransportError, StaleTicketError):  # a node retired, replaced, or a newer map?
            if not self._refreshed(before):
                raise
        except NotFoundError:
            # Another thread switched this job to a ticket with older versions to look in
            # while this read used only the newest node: look again, everywhere.
            if self.ticket is before:
                raise
        return self.get(key, delete_after_read=delete_after_read)

    def _take_newest(self, node: str, raw: bytes) -> bytes:
        value = self._get_at(node, raw, True)
        nodes = self.router.read_nodes(raw)
        self._delete_older(raw, [n for n in nodes[nodes.index(node) + 1 :] if n not in self._gone])
        return value

    def _get_at(self, node: str, raw: bytes, delete_after_read: bool) -> bytes:
        flags = _DELETE_AFTER_READ if delete_after_read else 0
        reader = self._readers.get(node)
        if reader is None:
            reader = self._readers[node] = self._reader_for(node)
        h, data = self.client.call(
            node, _SHM_GET if reader is not _read_value else _GET, self._job, self._tokens[node],
            raw, read=reader, flags=flags, map_version=self._version,
        )  # fmt: skip
        if h.flags & _SPECIAL:
            return self._value(h.flags, raw, data, delete_after_read)
        return data

    def _value(self, flags: int, raw: bytes, data: Buffer, delete_after_read: bool) -> bytes:
        """The value a GET or MULTI-GET answered (``data``, flagged ``flags``): a striped
        value's chunks assembled, a compressed one decompressed."""
        if flags & _STRIPED:
            return stripes.get(self, raw, data, delete_after_read)
        return decompress(data) if flags & _LZ4 else bytes(data)

    def _reader_for(self, node: str) -> Callable[[Connection, ResponseHeader], bytes]:
        """How GET answers from ``node`` are read: through its arena when it is mapped here."""
        arena = self.client.arena(node)
        if arena is None:
            return _read_value
        return shared.BytesReader(self.client, arena, self._job, self._tokens[node])

    def get_into(self, key: str, buffer: Buffer, *, delete_after_read: bool = False) -> int:
        """Read the value of ``key`` into ``buffer`` (no allocation); returns its length.

        RequestError if the buffer is too small (the object is left as it was, unless
        ``delete_after_read``).
        """
        return self._read(key, lambda n, r: self._get_into_at(n, r, key, buffer,
                                                              delete_after_read))  # fmt: skip

    def _get_into_at(
        self, node: str, raw: bytes, key: str, buffer: Buffer, delete_after_read: bool
    ) -> int:
        target = memoryview(buffer).cast("B")
        if target.readonly:
            raise RequestError("get_into needs a writable buffer")
        flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
        arena = self.client.arena(node)
        if arena is not None:
            h, got = shared.get(self.client, arena, node, self._prefix(node), raw, flags, target)
            if h.flags & _STRIPED:  # the manifest, read into the buffer
                body = bytes(target[:got]) if isinstance(got, int) else got
                return stripes.get_into(self, raw, body, target, delete_after_read)
            if isinstance(got, int):
                return got
            value = decompress(got) if h.flags & Flag.LZ4 else got
            if len(value) > len(target):
                raise too_small(key, len(value), len(target))
            target[: len(value)] = value
            return len(value)

        def read(conn: Connection, h: ResponseHeader) -> int | bytes:
            if h.flags & _STRIPED:
                return conn.read_value(h)  # the manifest
            if h.flags & Flag.LZ4:
                value = decompress(conn.read_value(h))
                if len(value) > len(target):
                    raise too_small(key, len(value), len(target))
                target[: len(value)] = value
                return len(value)
            if h.length > len(target):
                conn.drain(h.length)
                raise too_small(key, h.length, len(target))
            conn.read_into(target[: h.length])
            if checksum(target[: h.length]) != h.checksum:
                raise ChecksumError(f"checksum mismatch reading {key!r}")
            return h.length

        got = self._call(node, Op.GET, raw, flags=flags, read=read)[1]
        if isinstance(got, bytes):
            return stripes.get_into(self, raw, got, target, delete_after_read)
        return int(got)

    def get_range(self, key: str, start: int, end: int, *, version: int = 0) -> bytes:
        """Bytes ``[start, end)`` of the value, clamped to its end like a slice.

        With ``version`` (an :class:`ObjectInfo`'s), only of that value: ConflictError if the
        key was overwritten or deleted since (reads of one file never mix two values).
        """
        if start < 0 or end < start:
            raise RequestError(f"bad range [{start}, {end})")
        try:
            return self._read(key, lambda n, r: self._get_range_at(n, r, key, start, end, version))
        except NotFoundError:
            if version:  # it was there when the version was taken
                raise ConflictError(f"{key!r} was deleted while it was being read") from None
            raise

    def _pinned_miss(self, node: str, raw: bytes) -> bool:
        """After a ConflictError from a read pinned to a version: whether ``node`` simply
        does not hold the key (an older weight map may have put it elsewhere)."""
        return not self._call(node, Op.EXISTS, raw)[0].size

    def _get_range_at(
        self, node: str, raw: bytes, key: str, start: int, end: int, version: int = 0
    ) -> bytes:
        try:
            h, data = self._call(
                node, Op.GET, raw, flags=Flag.RANGE, offset=start, length=end - start,
                arg=version, read=Connection.read_value,
            )  # fmt: skip
        except ConflictError:
            if version and self._pinned_miss(node, raw):
                raise NotFoundError(f"no object {key!r} on {node}") from None
            raise
        if h.flags & _SPECIAL:
            if h.flags & _STRIPED:
                return stripes.get_range(self, node, raw, h.version, start, end)
            return self.get(key)[start:end]  # ranges of compressed objects: the whole value
        return bytes(data)

    def get_ranges(self, ranges: Iterable[tuple[str, int, int]]) -> list[bytes]:
        """Bytes ``[start, end)`` of each ``(key, start, end)``, as :meth:`get_range` would
        return them: one request (and one answer) per node and key for up to a thousand
        ranges, pipelined per node, so many small reads cost about one round trip."""
        wanted = []
        raws: dict[str, bytes] = {}  # (each key checked once)
        for key, start, end in ranges:
            if start < 0 or end < start:
                raise RequestError(f"bad range [{start}, {end})")
            raw = raws.get(key)
            if raw is None:
                raw = raws[key] = validate_key(key)
            wanted.append((raw, start, end))
        got = self._fresh(lambda: byte_ranges.get_ranges(self, wanted))
        # The rest (misses on the newest map's node, compressed or striped values) one key at
        # a time: a compressed value read once for all its ranges, not once per range.
        rest: dict[bytes, list[int]] = {}
        for i, g in enumerate(got):
            if g is None:
                rest.setdefault(wanted[i][0], []).append(i)
        out: list[bytes] = [g if g is not None else b"" for g in got]
        for raw, indices in rest.items():
            key = raw.decode()
            whole = self.get(key) if len(indices) > 1 and self.stat(key).compressed else None
            for i in indices:
                _, start, end = wanted[i]
                out[i] = whole[start:end] if whole is not None else self.get_range(key, start, end)
        return out

    def get_buffer(
        self, key: str, *, delete_after_read: bool = False, verify: bool = True
    ) -> SharedBuffer:
        """A read-only buffer over the value, without a copy when the node is on this host.

        Use it as a context manager or call ``release()``: until then the node keeps the
        value's space, so the bytes stay those of the value read, even if the key is deleted
        or overwritten meanwhile (with ``delete_after_read`` the key is deleted at once and
        the space freed on release). From a remote node (or a compressed value) the buffer
        holds a copy, as it does for a striped value.

        Every read checks the value against its checksum, a pass over its bytes that is most
        of the time of a zero-copy read. ``verify=False`` skips it for a value mapped from a
        node on this host (bytes that crossed a network are always checked): it trusts that
        no process with the node's mapping wrote into the value's space.
        """
        read = lambda n, r: self._get_buffer_at(n, r, key, delete_after_read, verify)  # noqa: E731
        return self._read(key, read)

    def _get_buffer_at(
        self, node: str, raw: bytes, key: str, delete_after_read: bool, verify: bool = True
    ) -> SharedBuffer:

        arena = self.client.arena(node)
        if arena is None:  # (_get_at assembles a striped value)
            return SharedBuffer(memoryview(self._get_at(node, raw, delete_after_read)))
        flags = _DELETE_AFTER_READ if delete_after_read else 0
        buf, flags = shared.buffer(
            self.client, arena, node, self._prefix(node), raw, flags, verify=verify
        )
        if flags & _SPECIAL:
            with buf:
                if flags & _STRIPED:
                    return stripes.get_buffer(self, raw, buf.view, delete_after_read)
                return SharedBuffer(memoryview(decompress(buf.view)))
        return buf

    def _stat_at(self, node: str, raw: bytes, key: str) -> ObjectInfo:
        h, body = self._call(node, Op.STAT, raw)
        created, expires, length = STAT_BODY.unpack(body)
        if h.flags & _STRIPED:  # a manifest: the whole value's size and checksum are in it
            return stripes.stat(self, node, raw, key, h.version, created, expires or None)
        return ObjectInfo(
            key, h.size, h.checksum, h.version, bool(h.flags & _LZ4), created, expires or None,
            length=length,
        )  # fmt: skip
