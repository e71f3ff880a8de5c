"""A job's view of the store: put, get and the rest, routed by the job's weight maps.

Writes route by the newest weight map; reads look at the newest version's node first and at
older versions' nodes on a miss, so a key written before the job's placement changed is still
found. Every value is checked against the checksum its writer computed. A value above the
job's stripe size is striped over its nodes (:mod:`pocketlib.client.stripes`); put_many and get_many
batch per node (:mod:`pocketlib.client.batch`).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import lz4.block

from ..connection import Connection
from ..errors import (
    CapacityError,
    ChecksumError,
    ConflictError,
    DrainingError,
    NotFoundError,
    PocketError,
    RequestError,
    StaleTicketError,
    TransportError,
)
from ..protocol import (
    LIST_INFO,
    STAT_BODY,
    Buffer,
    Entry,
    Flag,
    Op,
    ResponseHeader,
    checksum,
    decode_entries,
    decode_keys,
    decompress,
    validate_key,
    validate_prefix,
)
from ..ticket import Ticket
from . import batch, shared, stripes
from . import ranges as byte_ranges
from .routes import RoutedJob
from .streams import ObjectReader, ObjectWriter

if TYPE_CHECKING:
    from .client import Client
    from .shared import SharedBuffer

__all__ = ["Job", "ObjectInfo"]

T = TypeVar("T")

_GET, _PUT, _SHM_GET = int(Op.GET), int(Op.PUT), int(Op.SHM_GET)
_LZ4, _DELETE_AFTER_READ, _STRIPED = Flag.LZ4, Flag.DELETE_AFTER_READ, Flag.STRIPED
#: Flags that make a GET answer more than the value itself: one test on the common path.
_SPECIAL = _LZ4 | _STRIPED
_read_value = Connection.read_value

#: What makes a write refresh the job's ticket and try again: a node draining, full or gone,
#: or one that knows a newer weight map than the ticket's.
_WRITE_RETRIES = (DrainingError, TransportError, CapacityError, StaleTicketError)
#: Values from this size are written through shared memory when the node is on this host:
#: two round trips (SHM_RESERVE, SHM_COMMIT) instead of one, which the copies saved repay
#: only from about this size (docs/tiers.md, "Co-located fast path").
_SHARED_PUT_MIN = 256 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What :meth:`Job.stat` reports about an object."""

    key: str
    #: Stored size in bytes (compressed size if ``compressed``).
    size: int
    checksum: int
    version: int
    compressed: bool
    created: float
    #: Expiry time (seconds since the epoch), or None.
    expires: float | None
    #: Stored as chunks over the job's nodes (size and checksum are the whole value's).
    striped: bool = False
    #: The value's own length, as :meth:`Job.get` returns it (``size`` unless compressed).
    length: int = -1

    def __post_init__(self) -> None:
        if self.length < 0:
            object.__setattr__(self, "length", self.size)


class Job(RoutedJob):
    """A job's view of the store: every operation is scoped to the job's namespace."""

    def __init__(
        self, client: Client, ticket: Ticket, tokens: Mapping[str, bytes] | None = None
    ) -> None:
        self.client = client
        self._owns_client = False
        self._readers: dict[str, Callable[[Connection, ResponseHeader], bytes]] = {}
        self._use(ticket, tokens)

    def deregister(self) -> dict[str, Any]:
        """Free the job's allocation and all its data on every node (controller jobs)."""
        return self.client.deregister_job(self)

    # -- routing ------------------------------------------------------------------------------
    # -- single objects -----------------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Buffer,
        *,
        ttl: float | None = None,
        compress: bool = False,
        persist: bool = False,
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous value.

        ``ttl`` (seconds) makes the node delete the object after that long; ``compress``
        stores it lz4-compressed (the reader decompresses transparently); ``persist`` also
        writes it through to the node's persist tier (S3), so it outlives :meth:`purge`. A
        value (compressed, if ``compress``) above the job's stripe size is striped.
        """
        put = lambda: self._put(key, data, ttl, compress, persist)  # noqa: E731
        self._fresh(put, _WRITE_RETRIES, settle=True)

    def put_filled(
        self, key: str, size: int, fill: Callable[[memoryview], None], *, ttl: float | None = None
    ) -> None:
        """Store a value of ``size`` bytes that ``fill(view)`` writes into the writable
        ``view`` it is given: the node's own memory when the node is on this host (the value
        is made in place, with no copy), else a fresh buffer that is then put. ``fill`` may be
        called again if the put is repeated (a newer ticket); it must fill all of ``view``."""
        raw = validate_key(key)
        ttl_ms = _ttl_ms(ttl)

        def put() -> None:
            node = self._node_for(raw)
            in_place = _SHARED_PUT_MIN <= size <= self._stripe_above
            arena = self.client.arena(node) if in_place else None
            if arena is None:
                buf = memoryview(bytearray(size))
                fill(buf)
                self._put_whole_or_striped(node, raw, buf, 0, ttl)
            else:
                replacing = Flag.REPLACED if self._may_stripe else 0
                old = shared.put_filled(self.client, arena, node, self._prefix(node), raw, size,
                                        fill, replacing, ttl_ms)  # fmt: skip
                if old is not None:
                    stripes.drop_chunks(self, raw, old)
            if not self._single:
                self._drop_older(raw)

        self._fresh(put, _WRITE_RETRIES, settle=True)

    def _put(
        self, key: str, data: Buffer, ttl: float | None, compress: bool, persist: bool
    ) -> None:
        node, raw, view, flags = self._encode(key, data, compress, persist)
        self._put_whole_or_striped(node, raw, view, flags, ttl)
        if not self._single:  # once it is stored: copies older weight maps placed elsewhere
            self._drop_older(raw)

    def _put_whole_or_striped(
        self, node: str, raw: bytes, view: Buffer, flags: int, ttl: float | None
    ) -> None:
        if len(view) > self._stripe_above:
            stripes.put(self, raw, view, flags, _ttl_ms(ttl))
            return
        # Where striped values may exist, the put asks the node for the manifest of a striped
        # value it replaces (flag REPLACED), whose chunks then go too.
        replacing = Flag.REPLACED if self._may_stripe else 0
        old = self._put_at(node, raw, view, flags | replacing, _ttl_ms(ttl))
        if old is not None:
            stripes.drop_chunks(self, raw, old)

    def _encode(
        self, key: str, data: Buffer, compress: bool, persist: bool
    ) -> tuple[str, bytes, Buffer, int]:
        """The node, raw key, value and flags a put of ``data`` under ``key`` sends."""
        node, raw = self._route(key)
        view, flags = _prepare_value(data, compress)
        if persist:
            flags |= Flag.PERSIST
        return node, raw, view, flags

    def _put_at(
        self,
        node: str,
        raw: bytes,
        view: Buffer,
        flags: int,
        ttl_ms: int,
        value_checksum: int | None = None,
    ) -> bytes | None:
        """One PUT on ``node`` (``value_checksum`` if the caller has it); with flag REPLACED,
        the manifest of a striped value replaced."""
        if len(view) >= _SHARED_PUT_MIN:
            arena = self.client.arena(node)
            if arena is not None:  # (it hashes the value while the node reserves its space)
                value = memoryview(view).cast("B")
                return shared.put(
                    self.client, arena, node, self._prefix(node), raw, value, flags, ttl_ms,
                    value_checksum,
                )  # fmt: skip
        if value_checksum is None:
            value_checksum = checksum(view)
        h, old = self.client.call(
            node, _PUT, self._job, self._tokens[node], raw, body=(view,), flags=flags,
            ttl_ms=ttl_ms, value_checksum=value_checksum, map_version=self._version,
        )  # fmt: skip
        return bytes(old) if h.flags & Flag.STRIPED else None

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
                raise _too_small(key, len(value), len(target))
            target[: len(value)] = value
            return len(value)

        def read(conn: Connection, h: ResponseHeader) -> int | bytes:
            if h.flags & _STRIPED:
                return conn.read_value(h)  # the manifest
            if h.flags & Flag.LZ4:
                value = decompress(conn.read_value(h))
                if len(value) > len(target):
                    raise _too_small(key, len(value), len(target))
                target[: len(value)] = value
                return len(value)
            if h.length > len(target):
                conn.drain(h.length)
                raise _too_small(key, h.length, len(target))
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

    def copy(self, src: str, dst: str) -> None:
        """Store the value of ``src`` under ``dst`` too (replacing what ``dst`` held).

        When the node that holds ``src`` is the one ``dst`` goes to, the node copies it and
        no byte crosses the network; otherwise (and for a striped value) the value passes
        through this process. NotFoundError if ``src`` is absent.
        """
        raw_dst = validate_key(dst)

        def copy() -> None:
            node = self._node_for(raw_dst)
            on_node = lambda n, raw: n == node and self._copy_at(n, raw, raw_dst)  # noqa: E731
            if not self._read(src, on_node):
                self._put(dst, self.get(src), None, False, False)
            elif not self._single:
                self._drop_older(raw_dst)

        self._fresh(copy, _WRITE_RETRIES, settle=True)

    def _copy_at(self, node: str, raw: bytes, raw_dst: bytes) -> bool:
        """COPY on ``node``; False if it left the copy to the client (a striped value)."""
        replacing = Flag.REPLACED if self._may_stripe else 0
        h, old = self._call(node, Op.COPY, raw, body=(raw_dst,), flags=replacing)
        if h.flags & _STRIPED:
            return False
        if h.flags & Flag.REPLACED:
            stripes.drop_chunks(self, raw_dst, bytes(old))
        return True

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
        from .shared import SharedBuffer

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

    def _prefix(self, node: str) -> tuple[bytes, bytes, int]:
        return self._job, self._tokens[node], self._version

    def stat(self, key: str) -> ObjectInfo:
        """Size, checksum, version and lifetime of ``key``; NotFoundError if absent."""
        return self._read(key, lambda n, r: self._stat_at(n, r, key))

    def _stat_at(self, node: str, raw: bytes, key: str) -> ObjectInfo:
        h, body = self._call(node, Op.STAT, raw)
        created, expires, length = STAT_BODY.unpack(body)
        if h.flags & _STRIPED:  # a manifest: the whole value's size and checksum are in it
            return stripes.stat(self, node, raw, key, h.version, created, expires or None)
        return ObjectInfo(
            key, h.size, h.checksum, h.version, bool(h.flags & _LZ4), created, expires or None,
            length=length,
        )  # fmt: skip

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        raw = validate_key(key)

        def ask() -> bool:
            nodes = [self._node_for(raw)] if self._single else self.router.read_nodes(raw)
            return any(self._call(n, Op.EXISTS, raw)[0].size for n in nodes if n not in self._gone)

        return self._fresh(ask)

    def delete(self, key: str) -> bool:
        """Delete ``key``; returns whether it existed (a missing key is not an error)."""
        raw = validate_key(key)

        found = False  # over every attempt: a repeated delete finds what the first one took

        def delete() -> bool:
            nonlocal found
            nodes = [self._node_for(raw)] if self._single else self.router.read_nodes(raw)
            # Every version's copy goes, or an older one would resurface.
            for node in nodes:
                if node not in self._gone:
                    found = self._delete_at(node, raw) or found
            return found

        return self._fresh(delete, settle=True)

    def _delete_at(self, node: str, raw: bytes) -> bool:
        if self._may_stripe:  # a striped value's chunks go with it
            return stripes.delete_at(self, node, raw)
        return bool(self._call(node, Op.DELETE, raw)[0].size)

    # -- many objects -------------------------------------------------------------------------
    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[str]:
        """Keys starting with ``prefix``, in sorted order, fetched a page at a time (the
        chunks of striped values are not listed)."""
        raw_prefix = validate_prefix(prefix)
        streams = [self._list_node(node, raw_prefix, page_size, first)
                   for node, first in self._first_pages(raw_prefix, page_size, False)]  # fmt: skip
        return heapq.merge(*streams)

    def _first_pages(
        self, prefix: bytes, page_size: int, detail: bool
    ) -> Sequence[tuple[str, tuple[ResponseHeader, Any]]]:
        """Every live node's first page now: a node that knows a newer weight map refuses
        it, and the listing starts again over the newer map's nodes."""
        return self._fresh(lambda: [(n, self._list_page(n, prefix, b"", page_size, detail))
                                    for n in self._live_nodes])  # fmt: skip

    def list_info(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """What :meth:`stat` would say of each key starting with ``prefix``, in key order,
        a page of keys and their details per request (not a request per key)."""
        raw_prefix = validate_prefix(prefix)
        streams = [self._list_infos(node, raw_prefix, page_size, first)
                   for node, first in self._first_pages(raw_prefix, page_size, True)]  # fmt: skip
        return heapq.merge(*streams, key=lambda info: info.key)

    def _list_infos(
        self, node: str, prefix: bytes, page_size: int, page: tuple[ResponseHeader, Any]
    ) -> Iterator[ObjectInfo]:
        pages = self._pages(node, prefix, page_size, page, True, decode_entries, _entry_key)
        for entry in (e for entries in pages for e in entries):
            if entry.status or _chunk(entry.key):
                continue  # (deleted since the node read the page; a striped value's chunk)
            key = entry.key.decode()
            if entry.flags & _STRIPED:  # the manifest's: its size is not the value's
                with contextlib.suppress(NotFoundError):  # (deleted meanwhile)
                    yield self.stat(key)
                continue
            size, version, created, expires, length = LIST_INFO.unpack(entry.value)
            yield ObjectInfo(key, size, entry.checksum, version, bool(entry.flags & _LZ4),
                             created, expires or None, length=length)  # fmt: skip

    def _list_page(
        self, node: str, prefix: bytes, cursor: bytes, page_size: int, detail: bool = False
    ) -> tuple[ResponseHeader, Any]:
        flags = Flag.DETAIL if detail else 0
        return self._call(node, Op.LIST, prefix, body=[cursor], arg=page_size, flags=flags)

    def _list_node(
        self, node: str, prefix: bytes, page_size: int, page: tuple[ResponseHeader, Any]
    ) -> Iterator[str]:
        for keys in self._pages(node, prefix, page_size, page, False, decode_keys, bytes):
            yield from (k.decode() for k in keys if not _chunk(k))

    def _pages(
        self,
        node: str,
        prefix: bytes,
        page_size: int,
        page: tuple[ResponseHeader, Any],
        detail: bool,
        decode: Callable[[bytes], Sequence[T]],
        key_of: Callable[[T], bytes],
    ) -> Iterator[Sequence[T]]:
        """One node's listing, page after page, from its first ``page``."""
        before = self.ticket
        while True:
            h, body = page
            items = decode(body)
            yield items
            if not (h.flags & Flag.MORE) or not items:
                return
            try:
                page = self._list_page(node, prefix, key_of(items[-1]), page_size, detail)
            except TransportError:
                if self._refreshed(before) and node in self._gone and node not in self._lost:
                    return  # retired once it held none of the job's data
                raise

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many objects were deleted
        (each chunk of a striped value counts as one)."""
        raw = validate_prefix(prefix)
        return self._on_every_node(Op.DELETE_PREFIX, raw)

    def _on_every_node(self, op: int, key: bytes = b"") -> int:
        """``op`` on each of the job's live nodes (under the newest ticket, if a node knows a
        newer one); the total of what they answered, over every attempt."""
        total = 0

        def each() -> int:
            nonlocal total
            for node in self._live_nodes:
                total += self._call(node, op, key)[0].size
            return total

        return self._fresh(each, settle=True)

    def put_many(
        self,
        items: Mapping[str, Buffer],
        *,
        ttl: float | None = None,
        compress: bool = False,
        persist: bool = False,
    ) -> None:
        """Store many values, batched per node and pipelined (options as for :meth:`put`).

        Raises the first error after trying every item; items that succeeded stay stored.
        """
        ttl_ms = _ttl_ms(ttl)
        # (Puts are idempotent: a retry puts every item again.)
        put = lambda: batch.put_many(self, items, ttl_ms, compress, persist)  # noqa: E731
        self._fresh(put, _WRITE_RETRIES, settle=True)

    def get_many(self, keys: Iterable[str], *, delete_after_read: bool = False) -> dict[str, bytes]:
        """Values of the keys that exist (missing keys are left out), batched and pipelined."""
        wanted = {validate_key(key): key for key in keys}
        out: dict[str, bytes] = {}

        def fetch() -> dict[str, bytes]:
            # A repeat (after a refresh) asks only for what is not in: values already taken
            # are kept, since delete-after-read is done for them.
            rest = [raw for raw, key in wanted.items() if key not in out]
            batch.get_many(self, rest, delete_after_read, out)
            return out

        return self._fresh(fetch)

    def wait_for(self, keys: Iterable[str], *, timeout: float | None = None) -> None:
        """Return once every key of ``keys`` is stored: the nodes that will store them answer
        when they are (no polling); PocketTimeoutError after ``timeout`` seconds."""
        from .waiting import wait_for

        wait_for(self, keys, timeout)

    # -- streams ------------------------------------------------------------------------------
    def writer(
        self, key: str, *, ttl: float | None = None, chunk_size: int = 4 * 1024 * 1024
    ) -> ObjectWriter:
        """A file-like writer for a value too large to hold in memory.

        The value becomes visible when the writer is closed; if it is abandoned (an exception
        inside ``with``), nothing is stored. Streamed values are not striped. A writer cannot
        send its value again: if the job's weight map changed since this handle's ticket, close
        raises StaleTicketError, stores nothing and leaves the handle refreshed, so a new
        writer routes by the newer map.
        """
        node, raw = self._route(key)
        return ObjectWriter(
            self.client.pools[node], self._job, self._tokens[node], raw, ttl_ms=_ttl_ms(ttl),
            chunk_size=chunk_size, map_version=self._version,
            on_stale=functools.partial(self._refreshed, self.ticket),
        )  # fmt: skip

    def reader(self, key: str, *, chunk_size: int = 4 * 1024 * 1024) -> ObjectReader:
        """A file-like reader fetching the value in ranges of ``chunk_size``.

        The whole value's checksum is verified when the last byte is read; ConflictError if the
        key is overwritten or deleted while it is being read.
        """
        info = self.stat(key)
        if info.compressed or info.striped:
            how = "compressed" if info.compressed else "striped"
            raise RequestError(f"{key!r} is {how}: read it with get(), get_into() or get_range()")
        raw = validate_key(key)
        node = self._read(
            key, lambda n, r: n if self._call(n, Op.EXISTS, r)[0].size else _missing(key)
        )
        return ObjectReader(self.client, node, self._job, self._tokens[node], raw, info.size,
                            info.version, info.checksum, chunk_size, self._version)  # fmt: skip

    # -- the job as a whole -------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Each node's stats (see :meth:`Client.node_stats`)."""
        return self.client.node_stats(self._live_nodes)

    def purge(self) -> int:
        """Delete every object of this job on every node and close the job there."""
        return self._on_every_node(Op.JOB_DELETE)

    def close(self) -> None:
        """Close connections (the job's data stays stored until purged)."""
        if self._owns_client:
            stripes.shutdown(self.client)
            self.client.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., Job], tuple[Any, ...]]:
        """Pickled by what opens it again, never by its connections (function arguments are
        pickled: Lithops, multiprocessing, Dask): a controller job by its current ticket
        (:func:`pocketlib.attach`), a direct-mode job by its nodes, name and stripe size."""
        from .client import _reattach, _reopen

        timeouts = self.client.timeouts
        if self.ticket.controller is None and not self.ticket.token:
            return _reopen, (tuple(self.client.nodes), self.name, self.ticket.stripe_size, timeouts)
        return _reattach, (self.ticket, timeouts)

    def __repr__(self) -> str:
        return f"<Job {self.ticket.job!r} on {len(self._live_nodes)} node(s)>"


def _chunk(raw: bytes) -> bool:
    return b"\0" in raw and stripes.is_chunk_key(raw)


def _entry_key(entry: Entry) -> bytes:
    return entry.key


def _prepare_value(data: Buffer, compress: bool) -> tuple[Buffer, int]:
    if compress:
        return lz4.block.compress(data, store_size=True), Flag.LZ4
    if type(data) is bytes:  # the common case needs no view
        return data, 0
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view, 0


def _ttl_ms(ttl: float | None) -> int:
    if ttl is None:
        return 0
    if ttl <= 0:
        raise RequestError("ttl must be positive seconds")
    return max(1, round(ttl * 1000))


def _too_small(key: str, need: int, have: int) -> PocketError:
    return RequestError(f"{key!r} is {need} bytes; the buffer holds {have}")


def _missing(key: str) -> NoReturn:
    raise NotFoundError(f"no object {key!r}")
