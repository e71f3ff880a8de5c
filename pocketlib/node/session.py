"""One client connection to a storage node: reading frames and serving each request.

A :class:`Session` runs on the connection's own thread: it checks each request (job, token,
draining, weight-map fence) and hands it to the layer that serves it, the value operations of
:mod:`pocketlib.node.values`, GET_RANGES and COPY in :mod:`pocketlib.node.objects`, the
co-located path in :mod:`pocketlib.node.shared`, and the small requests (STAT, LIST, DELETE,
WAIT, ...) here. A request that is refused before its value was read has the value read past,
so the connection stays in step; a frame that cannot be parsed is answered and the connection
closed, which harms no other connection.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import socket

from ..bodies import (
    LIST_INFO,
    STAT_BODY,
    Entry,
    decode_keys,
    encode_entries,
    encode_json,
    encode_keys,
    error_entry,
)
from ..errors import (
    DrainingError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ProtocolError,
    RequestError,
    TokenError,
)
from ..protocol import (
    CONTROL_OPS,
    MAX_META_BODY,
    MAX_WAIT_MS,
    REQUEST_HEADER,
    Flag,
    Op,
    RequestHeader,
    encode_response,
    unpack_request,
)
from ..tiers.base import ObjectMeta
from . import batches, objects
from .conn import OP_NAMES, Disconnected, check_key
from .shared import SharedSession
from .state import NodeState
from .values import Upload, ValueSession, slice_buffers

__all__ = ["Session"]

_LIST_PAGE_MAX = 10_000
# (Control operations too: a storage node refuses them in _simple, whatever job they name.)
_OPS_WITHOUT_JOB = frozenset(
    {int(Op.PING), int(Op.JOB_OPEN), int(Op.STATS), int(Op.MAP_INFO), *CONTROL_OPS}
)
_SHARED_OPS = frozenset(
    int(op) for op in (Op.MAP_INFO, Op.SHM_GET, Op.SHM_RELEASE, Op.SHM_RESERVE, Op.SHM_COMMIT)
)
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
_SHM_GET, _SHARED = int(Op.SHM_GET), Flag.SHARED
_GET_RANGES, _COPY = int(Op.GET_RANGES), int(Op.COPY)
_META_BODY_OPS = frozenset(
    {_LIST, _MULTI_GET, _MULTI_PUT, int(Op.WAIT), _GET_RANGES, _COPY, *CONTROL_OPS}
)


class Session(ValueSession):
    """Serves the requests of one connection, in order, on the calling thread."""

    def __init__(self, node: NodeState, conn: socket.socket) -> None:
        super().__init__(node, conn)
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
        except (Disconnected, OSError, ValueError):
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
            raise Disconnected
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
                if h.flags & _SHARED:  # a co-located client: large values by extents
                    self.shared.multi_get(h, job, body)
                else:
                    batches.multi_get(self, h, job, body)
            elif op == _MULTI_PUT:
                batches.multi_put(self, h, job, body)
            elif op == _STREAM_PUT:
                self._stream_put(h, job, key)
            elif op == _GET_RANGES:
                objects.get_ranges(self, h, job, key, body)
            elif op == _COPY:
                objects.copy(self, h, job, key, body)
            elif op == _SHM_GET:
                check_key(key)
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
                            up = Upload(job, key, 0, 0)
                        up.error = up.error or exc
                        uploads[h.request_id] = up
                        return
                    if up is not None:
                        self._abort_upload(up)
                        exc = up.error or exc
            self.reply_error(h.request_id, exc)

    def _simple(self, h: RequestHeader, job: str, key: str, body: bytes) -> None:
        conn = self.conn
        op = h.op
        size = 0
        flags = 0
        out = b""
        if op == Op.STAT:
            check_key(key)
            meta = self.tier.stat(job, key)
            out = STAT_BODY.pack(meta.created, meta.expires, self._length(job, key, meta))
            head = encode_response(
                h.request_id, flags=meta.flags, length=len(out), value_checksum=meta.checksum,
                size=meta.size, version=meta.version,
            )  # fmt: skip
            conn.sendall(head + out)
            return
        if op == Op.EXISTS:
            check_key(key)
            size = int(self.tier.exists(job, key))
            if not size and self.stale(h, job):
                raise self.stale_error(h.map_version, job, "a miss")
        elif op == Op.DELETE:
            check_key(key)
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
                out.append(error_entry(key.encode(), exc))
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
    def _fence(self, h: RequestHeader, job: str, body: bytes) -> None:
        """Refuse a write, delete or listing made under a stale ticket (a LIST only on its
        first page, so a listing under way finishes; a streamed put on its first chunk, and
        again as it commits)."""
        if not self.stale(h, job):
            return
        if (h.op == _LIST and body) or (h.op == _STREAM_PUT and h.request_id in self.uploads):
            return
        raise self.stale_error(h.map_version, job, OP_NAMES[h.op])


def _read_exact(rfile: io.BufferedReader, n: int) -> bytes:
    data = rfile.read(n) if n else b""
    if len(data) != n:
        raise Disconnected
    return data


def _read_meta_body(rfile: io.BufferedReader, h: RequestHeader) -> bytes:
    if h.length > MAX_META_BODY:
        raise ProtocolError(f"request body of {h.length} bytes exceeds {MAX_META_BODY}")
    return _read_exact(rfile, h.length)
