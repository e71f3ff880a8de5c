"""One client connection to a storage node: reading frames and serving each request.

A :class:`Session` runs on the connection's own thread. Values are received straight into the
tier's memory and sent straight out of it; small values (which arrive in the same read as their
header) are stored with one tier call. A request that is refused before its value was read has
the value read past, so the connection stays in step; a frame that cannot be parsed is answered
and the connection closed, which harms no other connection.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import (
    ConflictError,
    DrainingError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ProtocolError,
    RequestError,
    StaleTicketError,
    TokenError,
    UnknownJobError,
    status_for_error,
)
from ..protocol import (
    CONTROL_OPS,
    LIST_INFO,
    MAGIC,
    MAX_META_BODY,
    MAX_WAIT_MS,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    STAT_BODY,
    VERSION,
    Buffer,
    Entry,
    Flag,
    Hasher,
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
from ..tiers.base import Lease, ObjectMeta, Reservation
from ..transport import send_buffers, socket_reader
from . import objects
from .objects import slice_buffers
from .shared import SharedSession

if TYPE_CHECKING:
    from .server import StorageNode

__all__ = ["OP_NAMES", "ConnStats", "Session"]

_DRAIN_CHUNK = 1 << 20
_LIST_PAGE_MAX = 10_000
# (Control operations too: a storage node refuses them in _simple, whatever job they name.)
_OPS_WITHOUT_JOB = frozenset(
    {int(Op.PING), int(Op.JOB_OPEN), int(Op.STATS), int(Op.MAP_INFO), *CONTROL_OPS}
)
_SHARED_OPS = frozenset(
    int(op) for op in (Op.MAP_INFO, Op.SHM_GET, Op.SHM_RELEASE, Op.SHM_RESERVE, Op.SHM_COMMIT)
)
OP_NAMES = {int(op): op.name.lower() for op in Op}
# Plain ints for the dispatch on every request (enum attribute lookups cost microseconds).
_GET, _PUT, _MULTI_GET, _MULTI_PUT, _STREAM_PUT, _LIST = (
    int(Op.GET), int(Op.PUT), int(Op.MULTI_GET), int(Op.MULTI_PUT), int(Op.STREAM_PUT),
    int(Op.LIST),
)  # fmt: skip
_VALUE_OPS = frozenset({_PUT, _STREAM_PUT})
#: What a draining node refuses (a streamed put already under way may finish).
_NEW_DATA_OPS = frozenset({_PUT, _MULTI_PUT, int(Op.SHM_RESERVE), int(Op.COPY)})
#: What a node refuses from a handle whose ticket is older than the job's newest weight map
#: it knows: writes (checked again as they commit), deletes, and the first page of a LIST.
#: (A read that hits is served: a newer map never leaves an older copy where an older one
#: routes; a read that misses is answered StaleTicketError instead of NotFoundError.)
_FENCED_OPS = frozenset(
    int(op) for op in (Op.PUT, Op.MULTI_PUT, Op.STREAM_PUT, Op.SHM_RESERVE, Op.DELETE,
                       Op.DELETE_PREFIX, Op.JOB_DELETE, Op.LIST, Op.WAIT, Op.COPY)
)  # fmt: skip
_JOB_MAP_VERSION = int(Op.JOB_MAP_VERSION)
_SHM_GET = int(Op.SHM_GET)
_GET_RANGES, _COPY = int(Op.GET_RANGES), int(Op.COPY)
_META_BODY_OPS = frozenset(
    {_LIST, _MULTI_GET, _MULTI_PUT, int(Op.WAIT), _GET_RANGES, _COPY, *CONTROL_OPS}
)
_pack_response = RESPONSE_HEADER.pack
_DELETE_AFTER_READ, _RANGE, _STORED = Flag.DELETE_AFTER_READ, Flag.RANGE, Flag.STORED
_REPLACED = Flag.REPLACED
#: Largest manifest of a striped value a PUT with REPLACED reports.
_MANIFEST_MAX = 4096
#: Values up to this size arrive with their header in one read and are stored in one step.
_SMALL_VALUE = 16 * 1024
_JOIN_LIMIT = 16 * 1024


class ConnStats:
    """Counters of one connection, bumped by its own thread only (so no lock)."""

    __slots__ = ("bytes_in", "bytes_out", "errors", "job_ops", "ops")

    def __init__(self) -> None:
        self.ops = [0] * 64
        #: Requests per job (what the controller bills as requests).
        self.job_ops: dict[str, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0

    def add(self, other: ConnStats) -> None:
        """Fold another connection's counters into these."""
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.errors += other.errors
        self.ops = [a + b for a, b in zip(self.ops, other.ops, strict=True)]
        for job, n in other.job_ops.items():
            self.job_ops[job] = self.job_ops.get(job, 0) + n


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


class Session:
    """Serves the requests of one connection, in order, on the calling thread."""

    def __init__(self, node: StorageNode, conn: socket.socket) -> None:
        self.node = node
        self.tier = node.tier
        self.conn = conn
        self.rfile = socket_reader(conn)
        self.uploads: dict[int, _Upload] = {}
        self.stats = ConnStats()
        self.shared = SharedSession(self)

    def run(self) -> None:
        """Serve until the peer closes the connection or sends a frame that cannot be parsed;
        then give back whatever a half-finished upload holds."""
        header = bytearray(REQUEST_HEADER.size)
        readinto = self.rfile.readinto
        try:
            while readinto(header) == len(header):  # short: closed between frames
                request_id = 0
                try:
                    h = unpack_request(header)
                    request_id = h.request_id
                    self.handle(h)
                except (ProtocolError, InvalidKeyError) as exc:
                    # The stream can no longer be trusted: answer, then hang up on this client.
                    self.reply_error(request_id, exc)
                    return
        except (_Disconnected, OSError, ValueError):
            return  # the peer vanished; what it was sending is aborted below
        finally:
            for up in self.uploads.values():
                self._abort_upload(up)
            self.shared.close()
            with contextlib.suppress(OSError):
                self.rfile.close()

    def handle(self, h: RequestHeader) -> None:
        """Serve one request whose header was read."""
        rfile, uploads = self.rfile, self.uploads
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
        if op not in OP_NAMES:
            raise ProtocolError(f"unknown opcode {op}")
        self.stats.ops[op] += 1
        # Bodies that are not values are read before anything can refuse the request, so a
        # refusal never leaves them in the stream.
        body = _read_meta_body(rfile, h) if op in _META_BODY_OPS else b""
        try:
            if h.flags & Flag.PERSIST and not self.node.persists:
                raise RequestError("this node has no persist tier (start it with --persist)")
            if self.node.draining and (
                op in _NEW_DATA_OPS or (op == _STREAM_PUT and h.request_id not in uploads)
            ):
                raise DrainingError("this node is being drained: it takes no new data")
            if op not in _OPS_WITHOUT_JOB:
                expected = self.node.jobs.get(job)
                if expected is None:
                    self.node.admit(job, token)  # a managed node opens a job on a valid token
                elif not hmac.compare_digest(token, expected):
                    raise TokenError(f"wrong token for job {job!r}")
                job_ops = self.stats.job_ops
                job_ops[job] = job_ops.get(job, 0) + 1
                if h.map_version and op in _FENCED_OPS:
                    self._fence(h, job, body)
            if op == _GET:
                self._get(h, job, key)
            elif op == _PUT:
                self._put(h, job, key)
            elif op == _MULTI_GET:
                self._multi_get(h, job, body)
            elif op == _MULTI_PUT:
                self._multi_put(h, job, body)
            elif op == _STREAM_PUT:
                self._stream_put(h, job, key)
            elif op == _GET_RANGES:
                objects.get_ranges(self, h, job, key, body)
            elif op == _COPY:
                objects.copy(self, h, job, key, body)
            elif op == _SHM_GET:
                _check_key(key)
                self.shared.get(h, job, key)
            elif op in _SHARED_OPS:
                self.shared.handle(h, job, key)
            else:
                self._simple(h, job, key, body)
        except ProtocolError:
            raise
        except PocketError as exc:
            if type(exc) is NotFoundError and self.stale(h, job):
                exc = self.stale_error(h.map_version, job, "a miss")
            if op in _VALUE_OPS:
                # Refused before its value was read: read past it to stay in step.
                self._drain(h.length)
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
            self.reply_error(h.request_id, exc)

    def _get(self, h: RequestHeader, job: str, key: str) -> None:
        conn = self.conn
        _check_key(key)
        flags = h.flags
        take = bool(flags & _DELETE_AFTER_READ)
        if not flags & _RANGE:
            small = self.tier.read_small(job, key, _SMALL_VALUE, take=take)
            if small is not None:  # copied out in one step: one small send, nothing to release
                meta, data = small
                head = _pack_response(
                    MAGIC, VERSION, 0, meta.flags, 0, h.request_id, 0, meta.size, meta.checksum,
                    meta.size, meta.version,
                )  # fmt: skip
                conn.sendall(head + data)
                self.stats.bytes_out += meta.size
                return
        try:
            lease = self.tier.lease(job, key, take=take)
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
                buffers = slice_buffers(buffers, h.offset, h.length)
                hasher = Hasher()
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
        self.count(0, length)

    def _put(self, h: RequestHeader, job: str, key: str) -> None:
        conn, rfile = self.conn, self.rfile
        _check_key(key)
        ttl = h.ttl_ms / 1000 if h.ttl_ms else None
        replaced = self.striped_value(job, key) if h.flags & _REPLACED else None
        if h.length <= _SMALL_VALUE:
            # Small values are in the read buffer already: one copy, one tier call.
            value = rfile.read(h.length)
            if len(value) != h.length:
                raise _Disconnected
            try:
                self._check_version(h.map_version, job)
                epoch = self._epoch(job, key)
                meta = self.tier.put(
                    job, key, value, checksum=h.checksum, flags=h.flags & _STORED, ttl=ttl
                )
                self._check_epoch(job, key, epoch)
            except PocketError as exc:
                self.reply_error(h.request_id, exc)
                return
            self.node.waits.stored(job, key)
        else:
            res = self.tier.reserve(h.length)
            self._receive_into(res)
            try:  # the value is read: an error from here on is answered, never drained for
                meta = self.commit(
                    res, job, key, checksum=h.checksum, flags=h.flags & _STORED, ttl=ttl,
                    map_version=h.map_version,
                )  # fmt: skip
            except PocketError as exc:
                self.reply_error(h.request_id, exc)
                return
        if replaced is not None:  # the writer deletes the chunks of the value it replaced
            conn.sendall(encode_response(
                h.request_id, flags=Flag.STRIPED, length=len(replaced), size=meta.size,
                version=meta.version,
            ) + replaced)  # fmt: skip
        else:
            conn.sendall(
                _pack_response(
                    MAGIC, VERSION, 0, 0, 0, h.request_id, 0, 0, 0, meta.size, meta.version
                )
            )
        self.count(h.length, 0)

    def striped_value(self, job: str, key: str) -> bytes | None:
        """The manifest stored under ``key`` if its value is striped (else None)."""
        try:
            small = self.tier.read_small(job, key, _MANIFEST_MAX)
        except PocketError:  # absent (or unreadable): nothing to report
            return None
        if small is None or not small[0].flags & Flag.STRIPED:
            return None
        return small[1]

    def _receive_into(self, res: Reservation) -> None:
        rfile = self.rfile
        """Fill a reservation from the stream; abort it if the peer goes away."""
        try:
            for buf in res.buffers:
                if rfile.readinto(buf) != len(buf):
                    raise _Disconnected
        except BaseException:
            self.tier.abort(res)
            raise

    def _stream_put(self, h: RequestHeader, job: str, key: str) -> None:
        conn, uploads = self.conn, self.uploads
        _check_key(key)
        up = uploads.get(h.request_id)
        if up is None:
            if h.offset != 0:
                raise RequestError(f"stream for {key!r} starts at offset {h.offset}, not 0")
            up = uploads[h.request_id] = _Upload(job, key, h.flags & _STORED, h.ttl_ms)
        if up.error is None and (up.job != job or up.key != key or up.received != h.offset):
            up.error = RequestError(f"stream chunk for {key!r} out of order")
        if up.error is not None:
            self._drain(h.length)
        else:
            try:
                res = self.tier.reserve(h.length)
            except PocketError as exc:
                up.error = exc
                self._drain(h.length)
            else:
                self._receive_into(res)
                up.parts.append(res)
                up.received += h.length
                self.count(h.length, 0)
        if h.flags & Flag.MORE:
            return
        del uploads[h.request_id]
        if up.error is not None:
            self._abort_upload(up)
            self.reply_error(h.request_id, up.error)
            return
        try:
            res = self.tier.join(up.parts)
            meta = self.commit(
                res, job, key, checksum=h.arg, flags=up.flags,
                ttl=up.ttl_ms / 1000 if up.ttl_ms else None, map_version=h.map_version,
            )  # fmt: skip
        except PocketError as exc:
            self.reply_error(h.request_id, exc)
            return
        conn.sendall(encode_response(h.request_id, size=meta.size, version=meta.version))

    def _abort_upload(self, up: _Upload) -> None:
        for part in up.parts:
            self.tier.abort(part)
        up.parts.clear()

    def commit(
        self,
        res: Reservation,
        job: str,
        key: str,
        *,
        checksum: int,
        flags: int,
        ttl: float | None,
        map_version: int,
    ) -> ObjectMeta:
        """Commit unless the job was deleted while the value was arriving, or the sender's
        ticket became stale meanwhile (a newer weight map may send the key elsewhere)."""
        try:
            self._check_version(map_version, job)
            epoch = self._epoch(job, key)
        except (UnknownJobError, StaleTicketError):
            self.tier.abort(res)
            raise
        meta = self.tier.commit(res, job, key, checksum=checksum, flags=flags, ttl=ttl)
        self._check_epoch(job, key, epoch)
        self.node.waits.stored(job, key)
        return meta

    def _epoch(self, job: str, key: str) -> int:
        epoch = self.node.job_epochs.get(job)
        if epoch is None:
            raise UnknownJobError(f"job {job!r} was deleted while {key!r} was being put")
        return epoch

    def _check_epoch(self, job: str, key: str, epoch: int) -> None:
        """No object outlives its job: if the job was deleted (or deleted and opened again)
        while this put committed, what it stored is removed and the put fails."""
        if self.node.job_epochs.get(job) != epoch:
            self.tier.delete(job, key)
            raise UnknownJobError(f"job {job!r} was deleted while {key!r} was being put")

    def _multi_put(self, h: RequestHeader, job: str, body: bytes) -> None:
        results: list[Entry] = []
        ttl = h.ttl_ms / 1000 if h.ttl_ms else None
        for e in decode_entries(body):
            try:
                key = e.key.decode("utf-8")
                _check_key(key)
                if e.flags & Flag.PERSIST and not self.node.persists:
                    raise RequestError("this node has no persist tier (start it with --persist)")
                replaced = self.striped_value(job, key) if e.flags & _REPLACED else None
                res = self.tier.reserve(len(e.value))
                res.fill(e.value)
                meta = self.commit(
                    res, job, key, checksum=e.checksum, flags=e.flags & _STORED, ttl=ttl,
                    map_version=h.map_version,
                )  # fmt: skip
                if replaced is not None:  # as for PUT: the manifest it replaced, for its chunks
                    results.append(Entry(e.key, replaced, 0, Flag.STRIPED, meta.version))
                else:
                    results.append(Entry(e.key, b"", 0, 0, meta.version))
            except (PocketError, UnicodeDecodeError) as exc:
                results.append(_error_entry(e.key, exc))
        self.count(len(body), 0)
        self._reply_parts(h.request_id, encode_entries(results))

    def _multi_get(self, h: RequestHeader, job: str, body: bytes) -> None:
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
                    if type(exc) is NotFoundError and self.stale(h, job):
                        exc = self.stale_error(h.map_version, job, "a miss")
                    entries.append(_error_entry(raw, exc))
                    continue
                leases.append(lease)
                value = lease.buffers[0] if len(lease.buffers) == 1 else lease.tobytes()
                entries.append(Entry(raw, value, 0, lease.meta.flags, lease.meta.checksum))
            parts = encode_entries(entries)
            self._reply_parts(h.request_id, parts)
        finally:
            for lease in leases:
                lease.release()
        self.count(0, sum(len(e.value) for e in entries))

    def _simple(self, h: RequestHeader, job: str, key: str, body: bytes) -> None:
        conn = self.conn
        op = h.op
        size = 0
        flags = 0
        out = b""
        if op == Op.STAT:
            _check_key(key)
            meta = self.tier.stat(job, key)
            out = STAT_BODY.pack(meta.created, meta.expires, self._length(job, key, meta))
            head = encode_response(
                h.request_id, flags=meta.flags, length=len(out), value_checksum=meta.checksum,
                size=meta.size, version=meta.version,
            )  # fmt: skip
            conn.sendall(head + out)
            return
        if op == Op.EXISTS:
            _check_key(key)
            size = int(self.tier.exists(job, key))
            if not size and self.stale(h, job):
                raise self.stale_error(h.map_version, job, "a miss")
        elif op == Op.DELETE:
            _check_key(key)
            size = int(self.tier.delete(job, key))
        elif op == Op.LIST:
            limit = min(h.arg or 1000, _LIST_PAGE_MAX)
            keys, more = self.tier.list(job, key, body.decode("utf-8", "replace"), limit)
            if h.flags & Flag.DETAIL:
                out = b"".join(encode_entries(self._detail(job, keys)))
            else:
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
            out = self.node.open_job(job)
        elif op == Op.JOB_DELETE:
            size = self.node.delete_job(job)
        elif op == _JOB_MAP_VERSION:
            self.node.learn_map_version(job, h.arg)
        elif op == Op.WAIT:
            missing = self._wait(h, job, body)
            out, size = encode_keys(missing), len(missing)
        elif op == Op.STATS:
            out = encode_json(self.node.stats())
        elif op in CONTROL_OPS:  # (off the path of data operations: they never get here)
            raise RequestError(f"{OP_NAMES[op]} goes to the controller, not a storage node")
        head = encode_response(h.request_id, flags=flags, length=len(out), size=size)
        conn.sendall(head + out)

    def _length(self, job: str, key: str, meta: ObjectMeta) -> int:
        """The value's own length: its size, or for a compressed value the length the lz4
        block stores in its first 4 bytes (0 for a striped value's manifest)."""
        if meta.flags & Flag.STRIPED:
            return 0
        if not meta.flags & Flag.LZ4:
            return meta.size
        try:
            with self.tier.lease(job, key) as lease:
                head = b"".join(slice_buffers(lease.buffers, 0, 4))
        except NotFoundError:
            return 0  # (deleted just now)
        return int.from_bytes(head, "little") if len(head) == 4 else 0

    def _detail(self, job: str, keys: list[str]) -> list[Entry]:
        """LIST with Flag.DETAIL: each key with what STAT would say (a key deleted since the
        page was read: an entry with its NotFoundError, which still moves the cursor on)."""
        out = []
        for key in keys:
            try:
                m = self.tier.stat(job, key)
            except NotFoundError as exc:
                out.append(_error_entry(key.encode(), exc))
                continue
            info = LIST_INFO.pack(m.size, m.version, m.created, m.expires,
                                  self._length(job, key, m))  # fmt: skip
            out.append(Entry(key.encode(), info, 0, m.flags, m.checksum))
        return out

    def _wait(self, h: RequestHeader, job: str, body: bytes) -> list[bytes]:
        """WAIT: block until the keys of ``body`` are stored (or the timeout, or a new map);
        the keys still missing."""
        keys = [k.decode("utf-8", "replace") for k in decode_keys(body)]
        tier = self.tier
        missing = self.node.waits.wait(
            job, keys, lambda k: tier.exists(job, k), min(h.arg, MAX_WAIT_MS) / 1000,
            lambda: self.stale(h, job),
        )  # fmt: skip
        if missing and self.stale(h, job):  # a newer map may send them elsewhere
            raise self.stale_error(h.map_version, job, "a wait")
        return [k.encode() for k in missing]

    # -- weight-map versions ------------------------------------------------------------------
    def stale(self, h: RequestHeader, job: str) -> bool:
        """Whether ``h`` was made under a ticket older than the job's newest map known here."""
        return 0 < h.map_version < self.node.map_versions.get(job, 0)

    def _fence(self, h: RequestHeader, job: str, body: bytes) -> None:
        """Refuse a write, delete or listing made under a stale ticket (a LIST only on its
        first page, so a listing under way finishes; a streamed put on its first chunk, and
        again as it commits)."""
        if not self.stale(h, job):
            return
        if (h.op == _LIST and body) or (h.op == _STREAM_PUT and h.request_id in self.uploads):
            return
        raise self.stale_error(h.map_version, job, OP_NAMES[h.op])

    def _check_version(self, map_version: int, job: str) -> None:
        """A write commits only if its ticket is still the job's newest here."""
        if 0 < map_version < self.node.map_versions.get(job, 0):
            raise self.stale_error(map_version, job, "a put")

    def stale_error(self, map_version: int, job: str, what: str) -> StaleTicketError:
        newest = self.node.map_versions.get(job, 0)
        return StaleTicketError(
            f"{what} under weight map v{map_version} of job {job!r}, which has v{newest}: "
            "refresh the ticket and try again"
        )

    # -- helpers ------------------------------------------------------------------------------
    def reply_error(self, request_id: int, exc: PocketError) -> None:
        """Answer a request with an error (never raises: the peer may be gone)."""
        conn = self.conn
        self.stats.errors += 1
        message = str(exc).encode("utf-8", "replace")[:4096]
        with contextlib.suppress(OSError):
            conn.sendall(
                encode_response(request_id, status_for_error(exc), length=len(message)) + message
            )

    def _reply_parts(self, request_id: int, parts: list[Buffer]) -> None:
        conn = self.conn
        length = sum(len(p) for p in parts)
        send_buffers(conn, [encode_response(request_id, length=length), *parts])

    def _drain(self, nbytes: int) -> None:
        rfile = self.rfile
        while nbytes > 0:
            chunk = rfile.read(min(nbytes, _DRAIN_CHUNK))
            if not chunk:
                raise _Disconnected
            nbytes -= len(chunk)

    def count(self, bytes_in: int, bytes_out: int) -> None:
        stats = self.stats
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
    return ConflictError(f"object {key!r} changed during the read")


def _error_entry(key: bytes, exc: Exception) -> Entry:
    pe = exc if isinstance(exc, PocketError) else InvalidKeyError(str(exc))
    return Entry(key, str(pe).encode("utf-8", "replace"), status_for_error(pe))
