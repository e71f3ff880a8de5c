"""The client: :func:`connect` to nodes, then put and get through a :class:`Job`.

Keys route to nodes by weighted rendezvous hashing in the client (no metadata hop); in direct
mode every node has the same weight. Every value carries a 64-bit checksum (XXH3) that the client
verifies on every read.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import lz4.block

from . import shared
from .batch import BATCH_BYTES, pipeline
from .config import Address, Timeouts
from .connection import Connection, NodePool
from .errors import (
    ChecksumError,
    NotFoundError,
    PocketError,
    PocketTimeoutError,
    RequestError,
    TransportError,
    error_for_status,
)
from .protocol import (
    STAT_BODY,
    Buffer,
    Entry,
    Flag,
    Op,
    ResponseHeader,
    checksum,
    decode_json,
    decode_keys,
    pack_request,
    validate_key,
    validate_prefix,
)
from .routing import WeightedRendezvous
from .streams import ObjectReader, ObjectWriter
from .transport import map_os_error

if TYPE_CHECKING:
    from .shared import SharedArena, SharedBuffer

__all__ = ["Client", "Job", "ObjectInfo", "connect"]

T = TypeVar("T")

_GET, _PUT, _SHM_GET = int(Op.GET), int(Op.PUT), int(Op.SHM_GET)
_LZ4, _DELETE_AFTER_READ = Flag.LZ4, Flag.DELETE_AFTER_READ
_read_value = Connection.read_value

#: Values from this size are written through shared memory when the node is on this host.
_SHARED_PUT_MIN = 64 * 1024
#: Values up to this size are joined with their header into one send.
_JOIN_LIMIT = 64 * 1024


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


class Client:
    """Connection pools to a set of nodes; opens :class:`Job` handles on them."""

    def __init__(self, nodes: Sequence[str | Address], *, timeouts: Timeouts | None = None) -> None:
        if not nodes:
            raise RequestError("a client needs at least one node address")
        self.timeouts = timeouts or Timeouts()
        addresses = [Address.parse(n) for n in nodes]
        self.pools = {str(a): NodePool(a, self.timeouts) for a in addresses}
        # Request ids only need to differ among requests in flight on one connection; one
        # counter per client lets a frame be built before a connection is taken.
        self._ids = itertools.count(1)
        # Per node: its tier mapped into this process (co-located), or None; probed once.
        self._arenas: dict[str, SharedArena | None] = {}

    def call(
        self,
        node: str,
        op: int,
        job: bytes = b"",
        token: bytes = b"",
        key: bytes = b"",
        *,
        body: Sequence[Buffer] = (),
        read: Callable[[Connection, ResponseHeader], T] | None = None,
        flags: int = 0,
        offset: int = 0,
        length: int = 0,
        ttl_ms: int = 0,
        arg: int = 0,
        value_checksum: int = 0,
    ) -> tuple[ResponseHeader, T | bytes]:
        """One request/response exchange with ``node``.

        ``length`` is the body's size when there is a body, else (ranged GET) the range's.
        ``read`` consumes the response body (default: read it as bytes). A request on a pooled
        connection that the node closed while it sat idle is retried once on a fresh one.
        """
        if body:
            length = len(body[0]) if len(body) == 1 else sum(len(b) for b in body)
        rid = next(self._ids) & 0xFFFFFFFF
        head = pack_request(
            op, rid, flags, job, token, key, offset, length, ttl_ms, arg, value_checksum
        )
        if not body:
            parts: Sequence[Buffer] = (head,)
        elif length <= _JOIN_LIMIT:
            parts = (head + body[0],) if len(body) == 1 else (head + b"".join(body),)
        else:
            parts = (head, *body)
        return self.exchange(node, parts, rid, read, retry=not flags & _DELETE_AFTER_READ)

    def exchange(
        self,
        node: str,
        parts: Sequence[Buffer],
        rid: int,
        read: Callable[[Connection, ResponseHeader], T] | None = None,
        *,
        retry: bool = True,
    ) -> tuple[ResponseHeader, T | bytes]:
        """Send one framed request (``parts``) to ``node`` and read its response.

        A request on a pooled connection that the node closed while it sat idle is retried
        once on a fresh connection when ``retry`` (the request is idempotent).
        """
        pool = self.pools[node]
        while True:
            conn = pool.acquire()
            try:
                if len(parts) == 1:
                    try:
                        conn.sock.sendall(parts[0])
                    except OSError as exc:
                        raise map_os_error(exc, conn.peer) from exc
                else:
                    conn.send(parts)
                h = conn.read_header(rid)
                result = read(conn, h) if read else conn.read_body(h.length)
            except PocketTimeoutError:
                conn.close()
                raise
            except TransportError:
                conn.close()
                if retry and conn.reused:
                    retry = False
                    continue  # a stale pooled socket: the node closed it while it was idle
                raise
            except BaseException as exc:
                pool.discard_or_release(conn, exc)
                raise
            pool.release(conn)
            return h, result

    def open_job(self, name: str) -> Job:
        """Open (or create) job ``name`` on every node; returns its handle."""
        raw = name.encode()
        if not raw:
            raise RequestError("a job needs a name")
        tokens: dict[str, bytes] = {}
        for node in self.pools:
            _, token = self.call(node, Op.JOB_OPEN, raw)
            tokens[node] = bytes(token)
        return Job(self, name, tokens, WeightedRendezvous.uniform(list(self.pools)))

    def arena(self, node: str) -> SharedArena | None:
        """``node``'s tier mapped into this process if it is on this host, else None."""
        try:
            return self._arenas[node]
        except KeyError:
            pass
        from .shared import open_arena

        try:
            info = decode_json(self.call(node, Op.MAP_INFO)[1])
        except PocketError:
            info = {}
        arena = self._arenas[node] = open_arena(info)
        return arena

    def node_stats(self) -> dict[str, dict[str, Any]]:
        """Each node's STATS: counters, tier accounting, per-job bytes used."""
        return {node: decode_json(self.call(node, Op.STATS)[1]) for node in self.pools}

    def ping(self) -> None:
        """Round trip to every node; raises if one is unreachable."""
        for node in self.pools:
            self.call(node, Op.PING)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self.pools.values():
            pool.close()


def connect(nodes: Sequence[str | Address], job: str, *, timeouts: Timeouts | None = None) -> Job:
    """Connect to fixed ``nodes`` ("host:port") and open ``job`` on them (direct mode).

    >>> with pocketlib.connect(["127.0.0.1:7000"], job="sort") as job:   # doctest: +SKIP
    ...     job.put("part-0", b"...")
    """
    client = Client(nodes, timeouts=timeouts)
    try:
        handle = client.open_job(job)
    except BaseException:
        client.close()
        raise
    handle._owns_client = True
    return handle


class Job:
    """A job's view of the store: every operation is scoped to the job's namespace."""

    def __init__(
        self, client: Client, name: str, tokens: Mapping[str, bytes], router: WeightedRendezvous
    ) -> None:
        self.client = client
        self.name = name
        self._job = name.encode()
        self._tokens = dict(tokens)
        self.router = router
        self._owns_client = False
        self._readers: dict[str, Callable[[Connection, ResponseHeader], bytes]] = {}

    # -- routing ------------------------------------------------------------------------------
    def _route(self, key: str) -> tuple[str, bytes]:
        raw = validate_key(key)
        return self.router.node_for(raw), raw

    def _call(self, node: str, op: int, key: bytes = b"", **kw: Any) -> tuple[ResponseHeader, Any]:
        return self.client.call(node, op, self._job, self._tokens[node], key, **kw)

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
        writes it through to the node's persist tier (S3), so it outlives :meth:`purge`.
        """
        node, raw = self._route(key)
        view, flags = _prepare_value(data, compress)
        if persist:
            flags |= Flag.PERSIST
        if len(view) >= _SHARED_PUT_MIN:
            arena = self.client.arena(node)
            if arena is not None:
                value = memoryview(view).cast("B")
                shared.put(
                    self.client, arena, node, self._prefix(node), raw, value, flags,
                    _ttl_ms(ttl) if ttl is not None else 0, checksum(value),
                )  # fmt: skip
                return
        self.client.call(
            node, _PUT, self._job, self._tokens[node], raw, body=(view,), flags=flags,
            ttl_ms=_ttl_ms(ttl) if ttl is not None else 0, value_checksum=checksum(view),
        )  # fmt: skip

    def get(self, key: str, *, delete_after_read: bool = False) -> bytes:
        """The value of ``key``; NotFoundError if absent.

        With ``delete_after_read`` the node frees the object in the same request.
        """
        node, raw = self._route(key)
        flags = _DELETE_AFTER_READ if delete_after_read else 0
        reader = self._readers.get(node)
        if reader is None:
            reader = self._readers[node] = self._reader_for(node)
        h, data = self.client.call(
            node, _SHM_GET if reader is not _read_value else _GET, self._job, self._tokens[node],
            raw, read=reader, flags=flags,
        )  # fmt: skip
        return _decompress(data) if h.flags & _LZ4 else data

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
        node, raw = self._route(key)
        target = memoryview(buffer).cast("B")
        if target.readonly:
            raise RequestError("get_into needs a writable buffer")
        flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
        arena = self.client.arena(node)
        if arena is not None:
            h, got = shared.get(self.client, arena, node, self._prefix(node), raw, flags, target)
            if isinstance(got, int):
                return got
            value = _decompress(got) if h.flags & Flag.LZ4 else got
            if len(value) > len(target):
                raise _too_small(key, len(value), len(target))
            target[: len(value)] = value
            return len(value)

        def read(conn: Connection, h: ResponseHeader) -> int:
            if h.flags & Flag.LZ4:
                value = _decompress(conn.read_value(h))
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

        return int(self._call(node, Op.GET, raw, flags=flags, read=read)[1])

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the value, clamped to its end like a slice."""
        if start < 0 or end < start:
            raise RequestError(f"bad range [{start}, {end})")
        node, raw = self._route(key)
        h, data = self._call(
            node, Op.GET, raw, flags=Flag.RANGE, offset=start, length=end - start,
            read=Connection.read_value,
        )  # fmt: skip
        if h.flags & Flag.LZ4:  # ranges of compressed objects: decompress the whole value
            return self.get(key)[start:end]
        return bytes(data)

    def get_buffer(self, key: str, *, delete_after_read: bool = False) -> SharedBuffer:
        """A read-only buffer over the value, without a copy when the node is on this host.

        Use it as a context manager or call ``release()``: until then the node keeps the
        value's space, so the bytes stay those of the value read, even if the key is deleted
        or overwritten meanwhile (with ``delete_after_read`` the key is deleted at once and
        the space freed on release). From a remote node (or a compressed value) the buffer
        holds a copy.
        """
        from .shared import SharedBuffer

        node, raw = self._route(key)
        arena = self.client.arena(node)
        if arena is None:
            return SharedBuffer(memoryview(self.get(key, delete_after_read=delete_after_read)))
        flags = _DELETE_AFTER_READ if delete_after_read else 0
        buf, flags = shared.buffer(self.client, arena, node, self._prefix(node), raw, flags)
        if flags & Flag.LZ4:
            with buf:
                return SharedBuffer(memoryview(_decompress(buf.view)))
        return buf

    def _prefix(self, node: str) -> tuple[bytes, bytes]:
        return self._job, self._tokens[node]

    def stat(self, key: str) -> ObjectInfo:
        """Size, checksum, version and lifetime of ``key``; NotFoundError if absent."""
        node, raw = self._route(key)
        h, body = self._call(node, Op.STAT, raw)
        created, expires = STAT_BODY.unpack(body)
        return ObjectInfo(
            key, h.size, h.checksum, h.version, bool(h.flags & Flag.LZ4), created, expires or None
        )

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        node, raw = self._route(key)
        return bool(self._call(node, Op.EXISTS, raw)[0].size)

    def delete(self, key: str) -> bool:
        """Delete ``key``; returns whether it existed (a missing key is not an error)."""
        node, raw = self._route(key)
        return bool(self._call(node, Op.DELETE, raw)[0].size)

    # -- many objects -------------------------------------------------------------------------
    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[str]:
        """Keys starting with ``prefix``, in sorted order, fetched a page at a time."""
        raw_prefix = validate_prefix(prefix)
        streams = [self._list_node(node, raw_prefix, page_size) for node in self.router.nodes]
        return heapq.merge(*streams)

    def _list_node(self, node: str, prefix: bytes, page_size: int) -> Iterator[str]:
        cursor = b""
        while True:
            h, body = self._call(node, Op.LIST, prefix, body=[cursor], arg=page_size)
            keys = decode_keys(body)
            yield from (k.decode() for k in keys)
            if not (h.flags & Flag.MORE) or not keys:
                return
            cursor = keys[-1]

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many were deleted."""
        raw = validate_prefix(prefix)
        return sum(self._call(node, Op.DELETE_PREFIX, raw)[0].size for node in self.router.nodes)

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
        ttl_ms = _ttl_ms(ttl) if ttl is not None else 0
        per_node: dict[str, list[Entry]] = defaultdict(list)
        large: list[tuple[str, Entry]] = []
        for key, data in items.items():
            node, raw = self._route(key)
            view, flags = _prepare_value(data, compress)
            entry = Entry(raw, view, 0, flags | (Flag.PERSIST if persist else 0), checksum(view))
            if len(view) > BATCH_BYTES:  # a value larger than a batch travels alone
                large.append((node, entry))
            else:
                per_node[node].append(entry)
        first_error: PocketError | None = None
        for node, entries in per_node.items():
            try:
                for result in pipeline(
                    self.client.pools[node],
                    Op.MULTI_PUT,
                    self._job,
                    self._tokens[node],
                    entries,
                    ttl_ms=ttl_ms,
                ):
                    if result.status and first_error is None:
                        first_error = error_for_status(result.status, bytes(result.value).decode())
            except PocketError as exc:  # this node failed; the others still get their items
                first_error = first_error or exc
        for node, e in large:
            try:
                self.client.call(
                    node, _PUT, self._job, self._tokens[node], e.key, body=(e.value,),
                    flags=e.flags, ttl_ms=ttl_ms, value_checksum=e.checksum,
                )  # fmt: skip
            except PocketError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def get_many(self, keys: Iterable[str], *, delete_after_read: bool = False) -> dict[str, bytes]:
        """Values of the keys that exist (missing keys are left out), batched and pipelined."""
        per_node: dict[str, list[Entry]] = defaultdict(list)
        for key in keys:
            node, raw = self._route(key)
            per_node[node].append(Entry(raw, b""))
        flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
        out: dict[str, bytes] = {}
        for node, entries in per_node.items():
            for e in pipeline(
                self.client.pools[node],
                Op.MULTI_GET,
                self._job,
                self._tokens[node],
                entries,
                flags=flags,
            ):
                key = e.key.decode()
                if e.status:
                    if e.status == NotFoundError.status:  # missing keys are left out
                        continue
                    raise error_for_status(e.status, bytes(e.value).decode())
                if checksum(e.value) != e.checksum:
                    raise ChecksumError(f"checksum mismatch reading {key!r}")
                out[key] = _decompress(e.value) if e.flags & Flag.LZ4 else bytes(e.value)
        return out

    # -- streams ------------------------------------------------------------------------------
    def writer(
        self, key: str, *, ttl: float | None = None, chunk_size: int = 4 * 1024 * 1024
    ) -> ObjectWriter:
        """A file-like writer for a value too large to hold in memory.

        The value becomes visible when the writer is closed; if it is abandoned (an exception
        inside ``with``), nothing is stored.
        """
        node, raw = self._route(key)
        return ObjectWriter(
            self.client.pools[node], self._job, self._tokens[node], raw, ttl_ms=_ttl_ms(ttl),
            chunk_size=chunk_size,
        )  # fmt: skip

    def reader(self, key: str, *, chunk_size: int = 4 * 1024 * 1024) -> ObjectReader:
        """A file-like reader fetching the value in ranges of ``chunk_size``.

        The whole value's checksum is verified when the last byte is read; ConflictError if the
        key is overwritten or deleted while it is being read.
        """
        info = self.stat(key)
        if info.compressed:
            raise RequestError(f"{key!r} is compressed: read it with get()")
        node, raw = self._route(key)
        return ObjectReader(self.client, node, self._job, self._tokens[node], raw, info.size,
                            info.version, info.checksum, chunk_size)  # fmt: skip

    # -- the job as a whole -------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Each node's stats (see :meth:`Client.node_stats`)."""
        return self.client.node_stats()

    def purge(self) -> int:
        """Delete every object of this job on every node and close the job there."""
        total = 0
        for node in self.router.nodes:
            total += self._call(node, Op.JOB_DELETE)[0].size
        return total

    def close(self) -> None:
        """Close connections (the job's data stays stored until purged)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Job {self.name!r} on {len(self.router.nodes)} node(s)>"


def _prepare_value(data: Buffer, compress: bool) -> tuple[Buffer, int]:
    if compress:
        return lz4.block.compress(data, store_size=True), Flag.LZ4
    if type(data) is bytes:  # the common case needs no view
        return data, 0
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view, 0


def _decompress(data: Buffer) -> bytes:
    try:
        out: bytes = lz4.block.decompress(data)
    except Exception as exc:  # lz4 raises a bare LZ4BlockError
        raise ChecksumError(f"compressed value does not decompress: {exc}") from exc
    return out


def _ttl_ms(ttl: float | None) -> int:
    if ttl is None:
        return 0
    if ttl <= 0:
        raise RequestError("ttl must be positive seconds")
    return max(1, round(ttl * 1000))


def _too_small(key: str, need: int, have: int) -> PocketError:
    return RequestError(f"{key!r} is {need} bytes; the buffer holds {have}")
