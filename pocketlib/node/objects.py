"""The node's side of requests that work on one stored value as a whole, for file-like use:
many byte ranges of it in one answer (GET_RANGES), and a copy under another key (COPY).

Both run on the session's thread like every request; both read the value through a lease, so
an overwrite or delete meanwhile never mixes two values into one answer or one copy.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..bodies import MAX_RANGES, MAX_RANGES_BYTES, RANGE_ENTRY
from ..errors import InvalidKeyError, RequestError
from ..protocol import Flag, Hasher, encode_response
from ..transport import send_buffers
from .conn import check_key
from .values import slice_buffers

if TYPE_CHECKING:
    from ..protocol import RequestHeader
    from .values import ValueSession

__all__ = ["copy", "get_ranges"]

#: Values the node cannot serve by byte range or copy byte for byte: the client does.
_CLIENT_SIDE = Flag.LZ4 | Flag.STRIPED
#: Most pieces an answer sends as they lie in the tier; more are joined into one buffer first.
_GATHER_MAX = 16


def get_ranges(session: ValueSession, h: RequestHeader, job: str, key: str, body: bytes) -> None:
    """Answer every ``(offset, length)`` of ``body`` from the value at ``key``, each clamped to
    the value's end like a slice: the lengths first, then the bytes, under one checksum."""
    count, rest = divmod(len(body), RANGE_ENTRY.size)
    if rest or not count:
        raise RequestError(f"a GET_RANGES body of {len(body)} bytes is not a list of ranges")
    if count > MAX_RANGES:
        raise RequestError(f"{count} ranges in one request; the limit is {MAX_RANGES}")
    check_key(key)
    with session.tier.lease(job, key) as lease:
        meta = lease.meta
        if meta.flags & _CLIENT_SIDE:
            session.conn.sendall(encode_response(
                h.request_id, flags=meta.flags, size=meta.size, version=meta.version
            ))  # fmt: skip
            return
        parts: list[memoryview] = []
        lengths: list[int] = []
        if len(lease.buffers) == 1:  # (the usual case: a slice clamps to the end by itself)
            whole = lease.buffers[0]
            parts = [whole[o : o + n] for o, n in RANGE_ENTRY.iter_unpack(body)]
            lengths = [len(p) for p in parts]
        else:
            for offset, length in RANGE_ENTRY.iter_unpack(body):
                got = slice_buffers(lease.buffers, offset, length)
                parts += got
                lengths.append(sum(len(g) for g in got))
        total = sum(lengths)
        if total > MAX_RANGES_BYTES:
            raise RequestError(
                f"the ranges add up to {total} bytes; one answer carries at most {MAX_RANGES_BYTES}"
            )
        if count > _GATHER_MAX:  # one copy beats hashing and sending many small pieces
            parts = [memoryview(b"".join(parts))]
        head = struct.pack(f"<{count}Q", *lengths)
        hasher = Hasher()
        hasher.update(head)
        for part in parts:
            hasher.update(part)
        send_buffers(session.conn, [encode_response(
            h.request_id, flags=meta.flags, length=len(head) + total,
            value_checksum=hasher.intdigest(), size=meta.size, version=meta.version,
        ), head, *parts])  # fmt: skip
    session.count(0, total)


def copy(session: ValueSession, h: RequestHeader, job: str, key: str, body: bytes) -> None:
    """Store the value at ``key`` under the key in ``body`` too, as a PUT of it would."""
    try:
        dest = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKeyError("the destination key is not valid UTF-8") from None
    check_key(key)
    check_key(dest)
    replaced = session.striped_value(job, dest) if h.flags & Flag.REPLACED else None
    tier = session.tier
    with tier.lease(job, key) as lease:
        meta = lease.meta
        if meta.flags & Flag.STRIPED:  # its chunks live under other keys, maybe elsewhere
            session.conn.sendall(encode_response(
                h.request_id, flags=Flag.STRIPED, size=meta.size, version=meta.version
            ))  # fmt: skip
            return
        res = tier.reserve(meta.size)
        try:
            _fill(res.buffers, lease.buffers)
        except BaseException:
            tier.abort(res)
            raise
    # (The lease is given back first: committing may need the space it pins.)
    stored = session.commit(
        res, job, dest, checksum=meta.checksum, flags=meta.flags & Flag.LZ4, ttl=None,
        map_version=h.map_version,
    )  # fmt: skip
    if replaced is not None:  # as for PUT: the manifest it replaced, whose chunks go too
        session.conn.sendall(encode_response(
            h.request_id, flags=Flag.REPLACED, length=len(replaced), size=stored.size,
            version=stored.version,
        ) + replaced)  # fmt: skip
    else:
        session.conn.sendall(
            encode_response(h.request_id, size=stored.size, version=stored.version)
        )


def _fill(dest: list[memoryview], src: list[memoryview]) -> None:
    """Copy the concatenation of ``src`` into that of ``dest`` (same total length)."""
    di, dpos = 0, 0
    for chunk in src:
        pos = 0
        while pos < len(chunk):
            while dpos == len(dest[di]):
                di, dpos = di + 1, 0
            n = min(len(chunk) - pos, len(dest[di]) - dpos)
            dest[di][dpos : dpos + n] = chunk[pos : pos + n]
            pos += n
            dpos += n
