"""Many small values in few frames: MULTI-PUT / MULTI-GET batches, pipelined on one connection.

Entries are grouped into frames of at most :data:`BATCH_KEYS` keys or :data:`BATCH_BYTES` bytes,
and up to :data:`WINDOW` frames are sent before the first answer is read, so a thousand small
puts cost a few round trips. The window bounds how much the node may have to answer while the
client is still sending, so neither side's socket buffers fill up and stall the other.
"""

from __future__ import annotations

from collections.abc import Iterator

from .connection import Connection, NodePool
from .protocol import Entry, Op, decode_entries, encode_entries, encode_keys, encode_request

__all__ = ["BATCH_BYTES", "BATCH_KEYS", "WINDOW", "pipeline"]

#: Bounds of one MULTI-PUT / MULTI-GET frame, and frames in flight per connection.
BATCH_BYTES = 4 * 1024 * 1024
BATCH_KEYS = 1000
WINDOW = 8


def pipeline(
    pool: NodePool,
    op: Op,
    job: bytes,
    token: bytes,
    entries: list[Entry],
    *,
    flags: int = 0,
    ttl_ms: int = 0,
) -> list[Entry]:
    """Send ``entries`` (MULTI_PUT: keys and values; MULTI_GET: keys) to one node in batched
    frames, up to :data:`WINDOW` in flight; the node's result entries, in order."""
    results: list[Entry] = []
    with pool.connection() as conn:
        pending: list[int] = []
        for batch in _batches(entries):
            if len(pending) == WINDOW:
                results += _read_entries(conn, pending.pop(0))
            rid = conn.next_id()
            if op == Op.MULTI_PUT:
                body = encode_entries(batch)
            else:
                body = [encode_keys([e.key for e in batch])]
            length = sum(len(b) for b in body)
            head = encode_request(op, rid, job, token, length=length, flags=flags, ttl_ms=ttl_ms)
            conn.send([head, *body])
            pending.append(rid)
        for rid in pending:
            results += _read_entries(conn, rid)
    return results


def _batches(entries: list[Entry]) -> Iterator[list[Entry]]:
    batch: list[Entry] = []
    size = 0
    for e in entries:
        if batch and (len(batch) == BATCH_KEYS or size + len(e.value) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += len(e.value)
    if batch:
        yield batch


def _read_entries(conn: Connection, rid: int) -> list[Entry]:
    h = conn.read_header(rid)
    return decode_entries(conn.read_body(h.length))
