"""Many small values in few frames: MULTI-PUT / MULTI-GET batches, pipelined on one connection.

:func:`put_many` and :func:`get_many` are :class:`~pocketlib.client.job.Job`'s: they group a job's
items per node (a large value travels alone, or striped), and a get_many over several
weight-map versions asks each key's nodes round by round, newest version first. Entries are
grouped into frames of at most :data:`BATCH_KEYS` keys or :data:`BATCH_BYTES` bytes,
and up to :data:`WINDOW` frames are sent before the first answer is read, so a thousand small
puts cost a few round trips. The window bounds how much the node may have to answer while the
client is still sending, so neither side's socket buffers fill up and stall the other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..bodies import Entry, decode_entries, encode_entries, encode_keys
from ..connection import Connection, NodePool
from ..errors import (
    ChecksumError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    ProtocolError,
    StaleTicketError,
    TransportError,
    error_for_status,
)
from ..protocol import Buffer, Flag, Op, checksum, encode_request
from . import shared, stripes

if TYPE_CHECKING:
    from .arena import SharedArena
    from .base import JobBase

__all__ = ["BATCH_BYTES", "BATCH_KEYS", "WINDOW", "get_many", "pipeline", "put_many"]

#: Bounds of one MULTI-PUT / MULTI-GET frame, and frames in flight per connection.
BATCH_BYTES = 4 * 1024 * 1024
BATCH_KEYS = 1000
WINDOW = 8


def put_many(
    job: JobBase, items: Mapping[str, Buffer], ttl_ms: int, compress: bool, persist: bool
) -> None:
    """Store ``items`` for ``job``, batched per node; the first error once every item was
    tried (items that succeeded stay stored)."""
    per_node: dict[str, list[Entry]] = defaultdict(list)
    large: list[tuple[str, Entry]] = []
    # Where striped values may exist, each put asks for the manifest it replaces (see put()).
    replacing = Flag.REPLACED if job._may_stripe else 0
    for key, data in items.items():
        node, raw, view, flags = job._encode(key, data, compress, persist)
        if len(view) > job._stripe_above:  # striped: no one node
            large.append(("", Entry(raw, view, 0, flags)))
            continue
        entry = Entry(raw, view, 0, flags | replacing, checksum(view))
        if len(view) > BATCH_BYTES:  # a value larger than a batch travels alone
            large.append((node, entry))
        else:
            per_node[node].append(entry)
    first_error: PocketError | None = None
    stored: list[bytes] = []  # keys whose new value is in
    for node, entries in per_node.items():
        try:
            for result in pipeline(
                job.client.pools[node],
                Op.MULTI_PUT,
                job._job,
                job._tokens[node],
                entries,
                ttl_ms=ttl_ms,
                map_version=job._version,
            ):
                if result.status:
                    if first_error is None:
                        first_error = error_for_status(result.status, bytes(result.value).decode())
                    continue
                stored.append(result.key)
                if result.flags & Flag.STRIPED:  # it replaced a striped value: its chunks go
                    stripes.drop_chunks(job, result.key, result.value)
        except PocketError as exc:  # this node failed; the others still get their items
            first_error = first_error or exc
    for node, e in large:
        try:
            if not node:
                stripes.put(job, e.key, e.value, e.flags, ttl_ms)
                stored.append(e.key)
                continue
            old = job._put_at(node, e.key, e.value, e.flags, ttl_ms, e.checksum)
            stored.append(e.key)
            if old is not None:
                stripes.drop_chunks(job, e.key, old)
        except PocketError as exc:
            first_error = first_error or exc
    if not job._single:  # as put(): no older copy of a key that was stored may stay
        for raw in stored:
            try:
                job._drop_older(bytes(raw))
            except PocketError as exc:
                first_error = first_error or exc
    if first_error is not None:
        raise first_error


def get_many(
    job: JobBase, wanted: Sequence[bytes], delete_after_read: bool, out: dict[str, bytes]
) -> None:
    """Put the values of the ``wanted`` keys that exist into ``out`` (by key)."""
    # Round r asks each key's r-th candidate node (newest weight map first); a job with
    # one weight-map version has one round.
    candidates: dict[bytes, list[str]] = {}
    for raw in wanted:
        if job._single:
            candidates[raw] = [job._node_for(raw)]
        else:
            candidates[raw] = [n for n in job.router.read_nodes(raw) if n not in job._gone]
    flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
    round_ = 0
    stale: StaleTicketError | None = None  # a miss on a node that knows a newer weight map
    while candidates:
        per_node: dict[str, list[Entry]] = defaultdict(list)
        for raw, nodes in candidates.items():
            if round_ < len(nodes):
                per_node[nodes[round_]].append(Entry(raw, b""))
        if not per_node:
            break
        for node, entries in per_node.items():
            for e in pipeline(
                job.client.pools[node], Op.MULTI_GET, job._job, job._tokens[node],
                entries, flags=flags, map_version=job._version, arena=job.client.arena(node),
            ):  # fmt: skip
                if e.status:
                    if e.status == NotFoundError.status:  # missing keys are left out
                        continue
                    if e.status == StaleTicketError.status:
                        # Not a miss: the caller refreshes and asks again. The rest of the
                        # answer is read first (delete-after-read values are taken already).
                        stale = StaleTicketError(bytes(e.value).decode())
                        del candidates[e.key]
                        continue
                    raise error_for_status(e.status, bytes(e.value).decode())
                out[e.key.decode()] = job._value(e.flags, e.key, e.value, delete_after_read)
                if delete_after_read and len(candidates[e.key]) > round_ + 1:
                    job._delete_older(e.key, candidates[e.key][round_ + 1 :])
                del candidates[e.key]
        round_ += 1
    if stale is not None:
        raise stale


def pipeline(
    pool: NodePool,
    op: Op,
    job: bytes,
    token: bytes,
    entries: list[Entry],
    *,
    flags: int = 0,
    ttl_ms: int = 0,
    map_version: int = 0,
    arena: SharedArena | None = None,
) -> list[Entry]:
    """Send ``entries`` (MULTI_PUT: keys and values; MULTI_GET: keys) to one node in batched
    frames, up to :data:`WINDOW` in flight; the node's result entries, in order (a MULTI_GET's
    values checked against their checksums).

    With ``arena`` (the node's tier mapped into this process), a MULTI_GET's large values are
    answered as places in the arena and copied from there, not through the socket.

    A batch the node refuses as a whole (a stale ticket, a draining node, a wrong token) stops
    the sending; the answers to the batches already sent are read before the error is raised,
    so the connection goes back to its pool in step."""
    results: list[Entry] = []
    refused: PocketError | None = None
    if arena is not None and op == Op.MULTI_GET:
        flags |= Flag.SHARED

    def read(rid: int) -> None:
        nonlocal refused
        try:
            h = conn.read_header(rid)
            answer = decode_entries(conn.read_body(h.length))
            if op == Op.MULTI_GET:
                _check_values(conn, answer, arena, (job, token), rid)
            results.extend(answer)
        except PocketError as exc:
            if isinstance(exc, TransportError | ProtocolError | InvalidKeyError):
                raise  # the connection is out of step: it is dropped
            refused = refused or exc

    with pool.connection() as conn:
        pending: list[int] = []
        for batch in _batches(entries):
            if len(pending) == WINDOW:
                read(pending.pop(0))
            if refused is not None:
                break
            rid = conn.next_id()
            if op == Op.MULTI_PUT:
                body = encode_entries(batch)
            else:
                body = [encode_keys([e.key for e in batch])]
            length = sum(len(b) for b in body)
            head = encode_request(
                op, rid, job, token, length=length, flags=flags, ttl_ms=ttl_ms,
                map_version=map_version,
            )  # fmt: skip
            conn.send([head, *body])
            pending.append(rid)
        for rid in pending:
            read(rid)
    if refused is not None:
        raise refused
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


def _check_values(
    conn: Connection,
    entries: list[Entry],
    arena: SharedArena | None,
    prefix: tuple[bytes, bytes],
    rid: int,
) -> None:
    """A MULTI_GET answer's values, each checked against its checksum (those in the arena as
    they are copied out, while the node still holds them)."""
    inline = [e for e in entries if not e.status and not e.flags & Flag.SHARED]
    if arena is not None:
        shared.take_entries(conn, arena, entries, prefix, rid)
    for e in inline:
        if checksum(e.value) != e.checksum:
            raise ChecksumError(f"checksum mismatch reading {e.key.decode()!r}")
