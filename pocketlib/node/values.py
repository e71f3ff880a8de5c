"""The value-moving half of a storage node's session: GET, PUT and streamed puts.

Values are received straight into the tier's memory and sent straight out of it; small values
(which arrive in the same read as their header) are stored with one tier call. A put commits
only once every byte arrived, and only if its job was not deleted nor its ticket fenced
meanwhile (:meth:`ValueSession.commit`); a connection that breaks mid-put gives back what it
reserved. Values already in memory (a small PUT, a MULTI_PUT's runs) are stored with
:meth:`ValueSession.store_batch`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ..errors import (
    ConflictError,
    NotFoundError,
    PocketError,
    RequestError,
    StaleTicketError,
    UnknownJobError,
)
from ..protocol import (
    MAGIC,
    RESPONSE_HEADER,
    VERSION,
    Buffer,
    Flag,
    Hasher,
    RequestHeader,
    encode_response,
)
from ..tiers.base import ObjectMeta, PutItem, Reservation
from ..transport import send_buffers
from .conn import BaseSession, Disconnected, check_key
from .state import NodeState

__all__ = ["SMALL_VALUE", "Upload", "ValueSession", "slice_buffers"]

_pack_response = RESPONSE_HEADER.pack
_DELETE_AFTER_READ, _RANGE, _STORED = Flag.DELETE_AFTER_READ, Flag.RANGE, Flag.STORED
_REPLACED = Flag.REPLACED
#: Largest manifest of a striped value a PUT with REPLACED reports.
_MANIFEST_MAX = 4096
#: Values up to this size arrive with their header in one read and are stored in one step.
SMALL_VALUE = 16 * 1024
_JOIN_LIMIT = 16 * 1024


@dataclass
class Upload:
    """A streamed put in progress on one connection."""

    job: str
    key: str
    flags: int
    ttl_ms: int
    parts: list[Reservation] = field(default_factory=list)
    received: int = 0
    error: PocketError | None = None


class ValueSession(BaseSession):
    """Moves values between one connection and the tier: the data operations of a session."""

    def __init__(self, node: NodeState, conn: socket.socket) -> None:
        super().__init__(node, conn)
        self.uploads: dict[int, Upload] = {}

    def _get(self, h: RequestHeader, job: str, key: str) -> None:
        conn = self.conn
        check_key(key)
        flags = h.flags
        take = bool(flags & _DELETE_AFTER_READ)
        if not flags & _RANGE:
            small = self.tier.read_small(job, key, SMALL_VALUE, take=take)
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
        check_key(key)
        ttl = h.ttl_ms / 1000 if h.ttl_ms else None
        replaced = self.striped_value(job, key) if h.flags & _REPLACED else None
        if h.length <= SMALL_VALUE:
            # Small values are in the read buffer already: one copy, one tier call.
            value = rfile.read(h.length)
            if len(value) != h.length:
                raise Disconnected
            try:
                meta = self.store_small(
                    job, key, value, checksum=h.checksum, flags=h.flags & _STORED, ttl=ttl,
                    map_version=h.map_version,
                )  # fmt: skip
            except PocketError as exc:
                self.reply_error(h.request_id, exc)
                return
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

    def store_small(
        self,
        job: str,
        key: str,
        value: Buffer,
        *,
        checksum: int,
        flags: int,
        ttl: float | None,
        map_version: int,
    ) -> ObjectMeta:
        """Store a value that is wholly in memory already with one tier call (what
        :meth:`commit` checks, checked around it)."""
        (got,) = self.store_batch(job, [(key, value, checksum, flags)], ttl, map_version)
        if isinstance(got, PocketError):
            raise got
        return got

    def store_batch(
        self, job: str, items: list[PutItem], ttl: float | None, map_version: int
    ) -> list[ObjectMeta | PocketError]:
        """Store values that are wholly in memory already with one tier call for all of them;
        each item's metadata or error. What :meth:`commit` checks is checked once around the
        call: a ticket fenced before it refuses every item, and a job deleted while it ran
        leaves none of them stored."""
        try:
            self._check_version(map_version, job)
            epoch = self._epoch(job, items[0][0])
        except PocketError as exc:
            return [exc] * len(items)
        got = self.tier.put_many(job, items, ttl=ttl)
        if self.node.job_epochs.get(job) != epoch:
            for (key, *_), meta in zip(items, got, strict=True):
                if not isinstance(meta, PocketError):
                    self.tier.delete(job, key)
            return [UnknownJobError(f"job {job!r} was deleted while its values were being put")
                    ] * len(items)  # fmt: skip
        stored = self.node.waits.stored
        for (key, *_), meta in zip(items, got, strict=True):
            if not isinstance(meta, PocketError):
                stored(job, key)
        return got

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
                    raise Disconnected
        except BaseException:
            self.tier.abort(res)
            raise

    def _stream_put(self, h: RequestHeader, job: str, key: str) -> None:
        conn, uploads = self.conn, self.uploads
        check_key(key)
        up = uploads.get(h.request_id)
        if up is None:
            if h.offset != 0:
                raise RequestError(f"stream for {key!r} starts at offset {h.offset}, not 0")
            up = uploads[h.request_id] = Upload(job, key, h.flags & _STORED, h.ttl_ms)
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

    def _abort_upload(self, up: Upload) -> None:
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


def slice_buffers(buffers: list[memoryview], start: int, length: int) -> list[memoryview]:
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


def _conflict(key: str) -> PocketError:
    return ConflictError(f"object {key!r} changed during the read")
