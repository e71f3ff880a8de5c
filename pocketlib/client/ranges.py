"""Many byte ranges in few round trips: the client half of :meth:`Job.get_ranges
<pocketlib.client.job.Job.get_ranges>` (fsspec's ``cat_ranges``, Parquet's column chunks).

Ranges are grouped per node, then per key. A key asked for once gets a ranged GET; a key asked
for several times gets GET_RANGES requests that carry up to :data:`RANGES_PER_REQUEST` of its
ranges each and are answered in one frame. All of a node's requests are pipelined on one
connection, with at most :data:`REQUEST_BYTES` of requests in flight: the node answers one
request while the later ones wait in the socket buffers, so neither side blocks the other.
"""

from __future__ import annotations

import struct
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..connection import OUT_OF_STEP, Connection
from ..errors import (
    ChecksumError,
    ConflictError,
    NotFoundError,
    PocketError,
    StaleTicketError,
)
from ..protocol import Flag, Op, encode_request

if TYPE_CHECKING:
    from .base import JobBase

__all__ = ["REQUEST_BYTES", "RANGES_PER_REQUEST", "get_ranges"]

#: Most ranges of one key in one GET_RANGES request, and most bytes its answer carries.
RANGES_PER_REQUEST = 1024
ANSWER_BYTES = 16 * 1024 * 1024
#: Most request bytes in flight on one connection.
REQUEST_BYTES = 64 * 1024

_SPECIAL = Flag.LZ4 | Flag.STRIPED
#: Requests sent and not yet answered: (request id, its bytes, its key, the indices it asked
#: for).
_Pending = deque[tuple[int, int, bytes, list[int]]]


def get_ranges(job: JobBase, wanted: Sequence[tuple[bytes, int, int]]) -> list[bytes | None]:
    """Bytes ``[start, end)`` of each ``(key, start, end)`` from the newest weight map's node.

    None where that node had nothing plain to give (a miss, a compressed or striped value):
    the caller reads those one by one, through the versioned read path.
    """
    out: list[bytes | None] = [None] * len(wanted)
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for i, (raw, _, _) in enumerate(wanted):
        per_key[raw].append(i)
    per_node: dict[str, dict[bytes, list[int]]] = defaultdict(dict)
    for raw, indices in per_key.items():
        per_node[job._node_for(raw)][raw] = indices
    refused: list[PocketError] = []  # (raised once every answer on the connection is read)
    versions: dict[bytes, int] = {}  # each key's value, as its first answer gave it
    for node, keys in per_node.items():
        pool = job.client.pools[node]
        conn = pool.acquire()
        pending: _Pending = deque()
        try:
            in_flight = 0
            for raw, indices in keys.items():
                for group in _groups(wanted, indices):
                    rid = conn.next_id()
                    frame = _request(job, node, rid, raw, [wanted[i] for i in group])
                    while pending and in_flight + len(frame) > REQUEST_BYTES:
                        in_flight -= _read(conn, pending.popleft(), out, refused, versions)
                    conn.send([frame])
                    pending.append((rid, len(frame), raw, group))
                    in_flight += len(frame)
            while pending:
                _read(conn, pending.popleft(), out, refused, versions)
        except BaseException as exc:
            if pending:  # answers still owed: the connection is out of step
                conn.close()
            else:
                pool.discard_or_release(conn, exc)
            raise
        pool.release(conn)
    if refused:
        raise refused[0]
    return out


def _groups(wanted: Sequence[tuple[bytes, int, int]], indices: list[int]) -> list[list[int]]:
    """``indices`` (ranges of one key) cut into requests of bounded size."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in indices:
        _, start, end = wanted[i]
        if current and (len(current) == RANGES_PER_REQUEST or size + end - start > ANSWER_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += end - start
    if current:
        groups.append(current)
    return groups


def _request(
    job: JobBase, node: str, rid: int, raw: bytes, ranges: list[tuple[bytes, int, int]]
) -> bytes:
    common = (rid, job._job, job._tokens[node], raw)
    if len(ranges) == 1:
        _, start, end = ranges[0]
        return encode_request(
            Op.GET, *common, flags=Flag.RANGE, offset=start, length=end - start,
            map_version=job._version,
        )  # fmt: skip
    flat = [n for _, start, end in ranges for n in (start, end - start)]
    body = struct.pack(f"<{len(flat)}Q", *flat)  # RANGE_ENTRY after RANGE_ENTRY
    head = encode_request(Op.GET_RANGES, *common, length=len(body), map_version=job._version)
    return head + body


def _read(
    conn: Connection,
    pending: tuple[int, int, bytes, list[int]],
    out: list[bytes | None],
    refused: list[PocketError],
    versions: dict[bytes, int],
) -> int:
    """Read the answer to one request into ``out``; the request's size in bytes. The ranges
    of one key come from one value: answers from another (the key was overwritten between two
    of its requests) make the whole read a ConflictError."""
    rid, size, raw, group = pending
    try:
        h = conn.read_header(rid)
    except (NotFoundError, StaleTicketError):
        return size  # (answered, so the connection is in step): the caller asks again
    except PocketError as exc:
        if isinstance(exc, OUT_OF_STEP):
            raise  # the connection is dropped
        refused.append(exc)
        return size
    if h.flags & _SPECIAL:  # compressed or striped: read elsewhere
        conn.drain(h.length)  # (whatever the answer carries: the connection stays in step)
        return size
    try:
        body = conn.read_value(h)
    except ChecksumError as exc:  # (the body was read whole: still in step)
        refused.append(exc)
        return size
    if versions.setdefault(raw, h.version) != h.version:
        refused.append(ConflictError(f"object {raw.decode()!r} changed during the read"))
        return size
    if len(group) == 1:
        out[group[0]] = body
        return size
    view = memoryview(body)
    pos = 8 * len(group)
    for i, length in zip(group, struct.unpack_from(f"<{len(group)}Q", body), strict=True):
        out[i] = bytes(view[pos : pos + length])
        pos += length
    return size
