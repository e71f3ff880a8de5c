"""Storage node: one TierDriver served over TCP to many concurrent clients.

Concurrency is a thread per connection with blocking sockets: a small request costs one recv
and one send with no event-loop hops, and large values move by ``recv_into`` straight into the
tier's memory and ``sendmsg`` straight out of it, both of which release the GIL.

Guarantees kept here:

* atomic puts: a value is committed only once every byte arrived; a client that disconnects
  mid-put leaves nothing and its reserved space is given back;
* per-job namespaces with a token per job (HMAC of the job name with the node's secret);
* lifetime hints: delete-after-read in the same request, TTLs reaped in the background;
* a malformed frame closes only its own connection; every other client keeps being served.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from .config import Address
from .errors import (
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ProtocolError,
    RequestError,
    TokenError,
    UnknownJobError,
    status_for_error,
)
from .protocol import (
    MAGIC,
    MAX_META_BODY,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    STAT_BODY,
    VERSION,
    Buffer,
    Entry,
    Flag,
    Op,
    RequestHeader,
    decode_entries,
    decode_keys,
    encode_entries,
    encode_json,
    encode_keys,
    encode_response,
    unpack_request,
)
from .tiers.base import Lease, ObjectMeta, Reservation, TierDriver
from .transport import send_buffers, socket_reader, tune_socket

__all__ = ["StorageNode"]

_DRAIN_CHUNK = 1 << 20
_LIST_PAGE_MAX = 10_000
_OPS_WITHOUT_JOB = frozenset({int(Op.PING), int(Op.JOB_OPEN), int(Op.STATS)})
_OP_NAMES = {int(op): op.name.lower() for op in Op}
# Plain ints for the dispatch on every request (enum attribute lookups cost microseconds).
_GET, _PUT, _MULTI_GET, _MULTI_PUT, _STREAM_PUT, _LIST = (
    int(Op.GET), int(Op.PUT), int(Op.MULTI_GET), int(Op.MULTI_PUT), int(Op.STREAM_PUT),
    int(Op.LIST),
)  # fmt: skip
_VALUE_OPS = frozenset({_PUT, _STREAM_PUT})
_META_BODY_OPS = frozenset({_LIST, _MULTI_GET, _MULTI_PUT})
_pack_response = RESPONSE_HEADER.pack
_DELETE_AFTER_READ, _RANGE, _LZ4 = Flag.DELETE_AFTER_READ, Flag.RANGE, Flag.LZ4
#: Values up to this size arrive with their header in one read and are stored in one step.
_SMALL_VALUE = 16 * 1024
_JOIN_LIMIT = 16 * 1024


class _ConnStats:
    """Counters of one connection, bumped by its own thread only (so no lock)."""

    __slots__ = ("bytes_in", "bytes_out", "errors", "ops")

    def __init__(self) -> None:
        self.ops = [0] * 64
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0


class _Disconnected(Exception):
    """The peer closed the connection mid-frame."""


@dataclass
class _Upload:
    """A streamed put in progress on one connection."""

    job: str
    key: str
    flags: int
    ttl_ms: int
    parts: list[Reservation] = field(default_factory=list)
    received: int = 0
    error: PocketError | None = None


class StorageNode:
    """Serve one tier driver on ``host:port`` (port 0 picks a free port).

    Use :meth:`start` to serve from background threads, or :meth:`serve_forever` to block;
    :meth:`stop` closes every connection and the tier.
    """

    def __init__(
        self,
        tier: TierDriver,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: bytes | None = None,
        reap_interval: float = 0.5,
    ) -> None:
        self.tier = tier
        self._secret = secret or secrets.token_bytes(32)
        self._jobs: dict[str, bytes] = {}  # open jobs and their tokens
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._tls = threading.local()
        self._live_stats: set[_ConnStats] = set()
        self._closed_stats = _ConnStats()
        self._connections_total = 0
        self._started = time.time()
        self._reap_interval = reap_interval
        self._listener = socket.create_server((host, port), backlog=1024)
        bound = self._listener.getsockname()
        self.address = Address(bound[0], bound[1])

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StorageNode:
        """Accept and serve connections from background threads."""
        for target in (self._accept_loop, self._reap_loop):
            t = threading.Thread(target=target, name=f"pocket-node-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop` (or :meth:`stop`) is called, then stop."""
        if not self._threads:
            self.start()
        self._stop_requested.wait()
        self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (from another thread, not a signal handler)."""
        self._stop_requested.set()

    def stop(self) -> None:
        """Stop accepting, close every connection, release the tier. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self.tier.close()

    def __enter__(self) -> StorageNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token_for(self, job: str) -> bytes:
        """The token that authenticates ``job`` on this node."""
        return hmac.new(self._secret, job.encode(), hashlib.sha256).digest()[:16]

    def stats(self) -> dict[str, Any]:
        """Counters and tier accounting, as the STATS operation returns them."""
        tier = asdict(self.tier.stats())
        with self._lock:
            every = [self._closed_stats, *self._live_stats]
            ops = {
                name: total
                for op, name in _OP_NAMES.items()
                if (total := sum(st.ops[op] for st in every))
            }
            return {
                "address": str(self.address),
                "pid": os.getpid(),
                "uptime": time.time() - self._started,
                "tier": tier,
                "ops": ops,
                "bytes_in": sum(st.bytes_in for st in every),
                "bytes_out": sum(st.bytes_out for st in every),
                "errors": sum(st.errors for st in every),
                "connections": len(self._conns),
                "connections_total": self._connections_total,
                "jobs": sorted(self._jobs),
            }

    # -- threads ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            tune_socket(conn)
            with self._lock:
                self._conns.add(conn)
                self._connections_total += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self._reap_interval):
            self.tier.expire(time.time())

    def _serve(self, conn: socket.socket) -> None:
        rfile = socket_reader(conn)
        uploads: dict[int, _Upload] = {}
        stats = self._tls.stats = _ConnStats()
        with self._lock:
            self._live_stats.add(stats)
        header = bytearray(REQUEST_HEADER.size)
        try:
            while True:
                if rfile.readinto(header) != len(header):
                    return  # clean close between frames (or a truncated header)
                request_id = 0
                try:
                    h = unpack_request(header)
                    request_id = h.request_id
                    self._handle(conn, rfile, h, uploads)
                except (ProtocolError, InvalidKeyError) as exc:
                    # The stream can no longer be trusted: answer, then hang up on this client.
                    self._reply_error(conn, request_id, exc)
                    return
        except (_Disconnected, OSError, ValueError):
            return  # peer vanished; what it was sending is aborted below
        finally:
            for up in uploads.values():
                self._abort_upload(up)
            with self._lock:
                self._conns.discard(conn)
                self._live_stats.discard(stats)
                closed = self._closed_stats
                closed.bytes_in += stats.bytes_in
                closed.bytes_out += stats.bytes_out
                closed.errors += stats.errors
                closed.ops = [a + b for a, b in zip(closed.ops, stats.ops, strict=True)]
            try:
                rfile.close()
                conn.close()
            except OSError:
                pass

    # -- requests -----------------------------------------------------------------------------
    def _handle(
        self,
        conn: socket.socket,
        rfile: io.BufferedReader,
        h: RequestHeader,
        uploads: dict[int, _Upload],
    ) -> None:
        var_len = h.job_len + h.token_len + h.key_len
        var = rfile.read(var_len)
        if len(var) != var_len:
            raise _Disconnected
        job = var[: h.job_len].decode("utf-8", "replace")
        token = var[h.job_len : h.job_len + h.token_len]
        try:
            key = var[h.job_len + h.token_len :].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidKeyError("key is not valid UTF-8") from None
        op = h.op
        if op not in _OP_NAMES:
            raise ProtocolError(f"unknown opcode {op}")
        self._tls.stats.ops[op] += 1
        # Bodies that are not values are read before anything can refuse the request, so a
        # refusal never leaves them in the stream.
        body = _read_meta_body(rfile, h) if op in _META_BODY_OPS else b""
        try:
            if op not in _OPS_WITHOUT_JOB:
                expected = self._jobs.get(job)
                if expected is None:
                    raise UnknownJobError(f"job {job!r} is not open on this node")
                if not hmac.compare_digest(token, expected):
                    raise TokenError(f"wrong token for job {job!r}")
            if op == _GET:
                self._get(conn, h, job, key)
            elif op == _PUT:
                self._put(conn, rfile, h, job, key)
            elif op == _MULTI_GET:
                self._multi_get(conn, h, job, body)
            elif op == _MULTI_PUT:
                self._multi_put(conn, h, job, body)
            elif op == _STREAM_PUT:
                self._stream_put(conn, rfile, h, job, key, uploads)
            else:
                self._simple(conn, h, job, key, body)
        except ProtocolError:
            raise
        except PocketError as exc:
            if op in _VALUE_OPS:
                # Refused before its value was read: read past it to stay in step.
                self._drain(rfile, h.length)
                if op == _STREAM_PUT:
                    up = uploads.pop(h.request_id, None)
                    if h.flags & Flag.MORE:
                        # Answer once, to the last chunk; read the chunks in between.
                        if up is None:
                            up = _Upload(job, key, 0, 0)
                        up.error = up.error or exc
                        uploads[h.request_id] = up
                        return
                    if up is not None:
                        self._abort_upload(up)
                        exc = up.error or exc
            self._reply_error(conn, h.request_id, exc)

    def _get(self, conn: socket.socket, h: RequestHeader, job: str, key: str) -> None:
        _check_key(key)
        flags = h.flags
        try:
            lease = self.tier.lease(job, key, take=bool(flags & _DELETE_AFTER_READ))
        except NotFoundError:
            if flags & _RANGE and h.arg:  # a reader pinned to a version that is gone
                raise _conflict(key) from None
            raise
        try:
            meta = lease.meta
            buffers = lease.buffers
            if flags & _RANGE:
                if h.arg and h.arg != meta.version:
                    raise _conflict(key)
                buffers = _slice_buffers(buffers, h.offset, h.length)
                hasher = xxhash.xxh64()
                for b in buffers:
                    hasher.update(b)
                value_checksum = hasher.intdigest()
                length = sum(len(b) for b in buffers)
            else:
                value_checksum = meta.checksum
                length = meta.size
            head = _pack_response(
                MAGIC, VERSION, 0, meta.flags, 0, h.request_id, 0, length, value_checksum,
                meta.size, meta.version,
            )  # fmt: skip
            if length <= _JOIN_LIMIT and len(buffers) == 1:
                conn.sendall(head + buffers[0])  # one small send beats a gathered write
            else:
                send_buffers(conn, [head, *buffers])
        finally:
            lease.release()
        self._count(0, length)

    def _put(
        self, conn: socket.socket, rfile: io.BufferedReader, h: RequestHeader, job: str, key: str
    ) -> None:
        _check_key(key)
        ttl = h.ttl_ms / 1000 if h.ttl_ms else None
        if h.length <= _SMALL_VALUE:
            # Small values are in the read buffer already: one copy, one tier call.
            value = rfile.read(h.length)
            if len(value) != h.length:
                raise _Disconnected
            try:
                with self._lock:  # JOB_DELETE holds it too: no object outlives its job
                    if job not in self._jobs:
                        raise UnknownJobError(f"job {job!r} was deleted during the put")
                    meta = self.tier.put(
                        job, key, value, checksum=h.checksum, flags=h.flags & _LZ4, ttl=ttl
                    )
            except PocketError as exc:
                self._reply_error(conn, h.request_id, exc)
                return
        else:
            res = self.tier.reserve(h.length)
            self._receive_into(rfile, res)
            try:  # the value is read: an error from here on is answered, never drained for
                meta = self._commit(
                    res, job, key, checksum=h.checksum, flags=h.flags & _LZ4, ttl=ttl
                )
            except PocketError as exc:
                self._reply_error(conn, h.request_id, exc)
                return
        conn.sendall(
            _pack_response(MAGIC, VERSION, 0, 0, 0, h.request_id, 0, 0, 0, meta.size, meta.version)
        )
        self._count(h.length, 0)

    def _receive_into(self, rfile: io.BufferedReader, res: Reservation) -> None:
        """Fill a reservation from the stream; abort it if the peer goes away."""
        try:
            for buf in res.buffers:
                if rfile.readinto(buf) != len(buf):
                    raise _Disconnected
        except BaseException:
            self.tier.abort(res)
            raise

    def _stream_put(
        self,
        conn: socket.socket,
        rfile: io.BufferedReader,
        h: RequestHeader,
        job: str,
        key: str,
        uploads: dict[int, _Upload],
    ) -> None:
        _check_key(key)
        up = uploads.get(h.request_id)
        if up is None:
            if h.offset != 0:
                raise RequestError(f"stream for {key!r} starts at offset {h.offset}, not 0")
            up = uploads[h.request_id] = _Upload(job, key, h.flags & Flag.LZ4, h.ttl_ms)
        if up.error is None and (up.job != job or up.key != key or up.received != h.offset):
            up.error = RequestError(f"stream chunk for {key!r} out of order")
        if up.error is not None:
            self._drain(rfile, h.length)
        else:
            try:
                res = self.tier.reserve(h.length)
            except PocketError as exc:
                up.error = exc
                self._drain(rfile, h.length)
            else:
                self._receive_into(rfile, res)
                up.parts.append(res)
                up.received += h.length
                self._count(h.length, 0)
        if h.flags & Flag.MORE:
            return
        del uploads[h.request_id]
        if up.error is not None:
            self._abort_upload(up)
            self._reply_error(conn, h.request_id, up.error)
            return
        res = self.tier.join(up.parts)
        try:
            meta = self._commit(
                res, job, key, checksum=h.arg, flags=up.flags,
                ttl=up.ttl_ms / 1000 if up.ttl_ms else None,
            )  # fmt: skip
        except PocketError as exc:
            self._reply_error(conn, h.request_id, exc)
            return
        conn.sendall(encode_response(h.request_id, size=meta.size, version=meta.version))

    def _abort_upload(self, up: _Upload) -> None:
        for part in up.parts:
            self.tier.abort(part)
        up.parts.clear()

    def _commit(
        self, res: Reservation, job: str, key: str, *, checksum: int, flags: int, ttl: float | None
    ) -> ObjectMeta:
        """Commit unless the job was deleted while the value was arriving."""
        with self._lock:  # JOB_DELETE holds it too: no object outlives its job
            if job not in self._jobs:
                self.tier.abort(res)
                raise UnknownJobError(f"job {job!r} was deleted while {key!r} was being put")
            return self.tier.commit(res, job, key, checksum=checksum, flags=flags, ttl=ttl)

    def _multi_put(self, conn: socket.socket, h: RequestHeader, job: str, body: bytes) -> None:
        results: list[Entry] = []
        ttl = h.ttl_ms / 1000 if h.ttl_ms else None
        for e in decode_entries(body):
            try:
                key = e.key.decode("utf-8")
                _check_key(key)
                res = self.tier.reserve(len(e.value))
                res.fill(e.value)
                meta = self._commit(res, job, key, checksum=e.checksum, flags=e.flags, ttl=ttl)
                results.append(Entry(e.key, b"", 0, 0, meta.version))
            except (PocketError, UnicodeDecodeError) as exc:
                results.append(_error_entry(e.key, exc))
        self._count(len(body), 0)
        self._reply_parts(conn, h.request_id, encode_entries(results))

    def _multi_get(self, conn: socket.socket, h: RequestHeader, job: str, body: bytes) -> None:
        take = bool(h.flags & Flag.DELETE_AFTER_READ)
        leases: list[Lease] = []
        entries: list[Entry] = []
        try:
            for raw in decode_keys(body):
                try:
                    key = raw.decode("utf-8")
                    _check_key(key)
                    lease = self.tier.lease(job, key, take=take)
                except (PocketError, UnicodeDecodeError) as exc:
                    entries.append(_error_entry(raw, exc))
                    continue
                leases.append(lease)
                value = lease.buffers[0] if len(lease.buffers) == 1 else lease.tobytes()
                entries.append(Entry(raw, value, 0, lease.meta.flags, lease.meta.checksum))
            parts = encode_entries(entries)
            self._reply_parts(conn, h.request_id, parts)
        finally:
            for lease in leases:
                lease.release()
        self._count(0, sum(len(e.value) for e in entries))

    def _simple(
        self, conn: socket.socket, h: RequestHeader, job: str, key: str, body: bytes
    ) -> None:
        op = h.op
        size = 0
        flags = 0
        out = b""
        if op == Op.STAT:
            _check_key(key)
            meta = self.tier.stat(job, key)
            out = STAT_BODY.pack(meta.created, meta.expires)
            head = encode_response(
                h.request_id, flags=meta.flags, length=len(out), value_checksum=meta.checksum,
                size=meta.size, version=meta.version,
            )  # fmt: skip
            conn.sendall(head + out)
            return
        if op == Op.EXISTS:
            _check_key(key)
            size = int(self.tier.exists(job, key))
        elif op == Op.DELETE:
            _check_key(key)
            size = int(self.tier.delete(job, key))
        elif op == Op.LIST:
            limit = min(h.arg or 1000, _LIST_PAGE_MAX)
            keys, more = self.tier.list(job, key, body.decode("utf-8", "replace"), limit)
            out = encode_keys([k.encode() for k in keys])
            flags = Flag.MORE if more else 0
            size = len(keys)
        elif op == Op.DELETE_PREFIX:
            size = self.tier.delete_prefix(job, key)
        elif op == Op.PING:
            pass
        elif op == Op.JOB_OPEN:
            if not job:
                raise RequestError("a job needs a name")
            out = self.token_for(job)
            with self._lock:
                self._jobs[job] = out
        elif op == Op.JOB_DELETE:
            with self._lock:
                self._jobs.pop(job, None)
                size = self.tier.delete_job(job)
        elif op == Op.STATS:
            out = encode_json(self.stats())
        head = encode_response(h.request_id, flags=flags, length=len(out), size=size)
        conn.sendall(head + out)

    # -- helpers ------------------------------------------------------------------------------
    def _reply_error(self, conn: socket.socket, request_id: int, exc: PocketError) -> None:
        self._tls.stats.errors += 1
        message = str(exc).encode("utf-8", "replace")[:4096]
        with contextlib.suppress(OSError):
            conn.sendall(
                encode_response(request_id, status_for_error(exc), length=len(message)) + message
            )

    def _reply_parts(self, conn: socket.socket, request_id: int, parts: list[Buffer]) -> None:
        length = sum(len(p) for p in parts)
        send_buffers(conn, [encode_response(request_id, length=length), *parts])

    def _drain(self, rfile: io.BufferedReader, nbytes: int) -> None:
        while nbytes > 0:
            chunk = rfile.read(min(nbytes, _DRAIN_CHUNK))
            if not chunk:
                raise _Disconnected
            nbytes -= len(chunk)

    def _count(self, bytes_in: int, bytes_out: int) -> None:
        stats = self._tls.stats
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out


def _read_exact(rfile: io.BufferedReader, n: int) -> bytes:
    data = rfile.read(n) if n else b""
    if len(data) != n:
        raise _Disconnected
    return data


def _read_meta_body(rfile: io.BufferedReader, h: RequestHeader) -> bytes:
    if h.length > MAX_META_BODY:
        raise ProtocolError(f"request body of {h.length} bytes exceeds {MAX_META_BODY}")
    return _read_exact(rfile, h.length)


def _check_key(key: str) -> None:
    if not key:
        raise RequestError("keys must not be empty")


def _conflict(key: str) -> PocketError:
    from .errors import ConflictError

    return ConflictError(f"object {key!r} changed during the read")


def _error_entry(key: bytes, exc: Exception) -> Entry:
    pe = exc if isinstance(exc, PocketError) else InvalidKeyError(str(exc))
    return Entry(key, str(pe).encode("utf-8", "replace"), status_for_error(pe))


def _slice_buffers(buffers: list[memoryview], start: int, length: int) -> list[memoryview]:
    """The buffers covering ``[start, start + length)`` of their concatenation."""
    out: list[memoryview] = []
    pos = 0
    end = start + length
    for buf in buffers:
        lo, hi = max(start, pos), min(end, pos + len(buf))
        if lo < hi:
            out.append(buf[lo - pos : hi - pos])
        pos += len(buf)
    return out
