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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..bodies import Entry, EntryWriter, decode_entries, encode_keys
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
BATCH_KEYS = 256
WINDOW = 8

_NOT_FOUND, _STALE = NotFoundError.status, StaleTicketError.status
_SPECIAL = Flag.LZ4 | Flag.STRIPED

#: A value to put, as sent: raw key, bytes, entry flags.
Item = tuple[bytes, Buffer, int]


def put_many(
    job: JobBase, items: Mapping[str, Buffer], ttl_ms: int, compress: bool, persist: bool
) -> None:
    """Store ``items`` for ``job``, batched per node; the first error once every item was
    tried (items that succeeded stay stored)."""
    per_node: dict[str, list[Item]] = defaultdict(list)
    large: list[tuple[str, Item]] = []
    # Where striped values may exist, each put asks for the manifest it replaces (see put()).
    replacing = Flag.REPLACED if job._may_stripe else 0
    for key, data in items.items():
        node, raw, view, flags = job._encode(key, data, compress, persist)
        if len(view) > job._stripe_above:  # striped: no one node
            large.append(("", (raw, view, flags)))
        elif len(view) > BATCH_BYTES:  # a value larger than a batch travels alone
            large.append((node, (raw, view, flags | replacing)))
        else:
            per_node[node].append((raw, view, flags | replacing))
    first_error: PocketError | None = None
    stored: list[bytes] = []  # keys whose new value is in
    for node, entries in per_node.items():
        try:
            for result in pipeline(
                job.client.pools[node],
                Op.MULTI_PUT,
                job._job,
                job._tokens[node],
                _frames(entries),
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
    for node, (raw, view, flags) in large:
        try:
            if not node:
                stripes.put(job, raw, view, flags, ttl_ms)
                stored.append(raw)
                continue
            old = job._put_at(node, raw, view, flags, ttl_ms)
            stored.append(raw)
            if old is not None:
                stripes.drop_chunks(job, raw, old)
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
    flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
    stale: StaleTicketError | None = None  # a miss on a node that knows a newer weight map
    if job._single:
        per_node: dict[str, list[bytes]] = defaultdict(list)
        node_for = job._node_for
        for raw in wanted:
            per_node[node_for(raw)].append(raw)
        for node, raws in per_node.items():
            stale = _get_at(job, node, raws, flags, out, None) or stale
        if stale is not None:
            raise stale
        return
    # Round r asks each key's r-th candidate node (newest weight map first).
    candidates = {raw: [n for n in job.router.read_nodes(raw) if n not in job._gone]
                  for raw in wanted}  # fmt: skip
    round_ = 0
    while candidates:
        per_node = defaultdict(list)
        for raw, nodes in candidates.items():
            if round_ < len(nodes):
                per_node[nodes[round_]].append(raw)
        if not per_node:
            break
        for node, raws in per_node.items():
            answered: list[bytes] = []
            stale = _get_at(job, node, raws, flags, out, answered) or stale
            for raw in answered:
                nodes = candidates.pop(raw)
                if delete_after_read and len(nodes) > round_ + 1:
                    job._delete_older(raw, nodes[round_ + 1 :])
        round_ += 1
    if stale is not None:
        raise stale


def _get_at(
    job: JobBase,
    node: str,
    raws: list[bytes],
    flags: int,
    out: dict[str, bytes],
    answered: list[bytes] | None,
) -> StaleTicketError | None:
    """MULTI_GET of ``raws`` on ``node``: the values found go into ``out``, the keys answered
    for good (found, or refused as asked under a stale ticket) into ``answered``; the
    StaleTicketError of such a refusal (the caller refreshes and asks again; the rest of the
    answer is read first, since delete-after-read values are taken already)."""
    stale: StaleTicketError | None = None
    take = bool(flags & Flag.DELETE_AFTER_READ)
    value_of = job._value
    bodies: list[list[Buffer]] = [
        [encode_keys(raws[i : i + BATCH_KEYS])] for i in range(0, len(raws), BATCH_KEYS)
    ]
    for key, value, status, value_flags, _ in pipeline(
        job.client.pools[node], Op.MULTI_GET, job._job, job._tokens[node], bodies,
        flags=flags, map_version=job._version, arena=job.client.arena(node),
    ):  # fmt: skip
        if status:
            if status == _NOT_FOUND:  # missing keys are left out
                continue
            if status != _STALE:
                raise error_for_status(status, bytes(value).decode())
            stale = StaleTicketError(bytes(value).decode())
        elif type(value) is bytes and not value_flags & _SPECIAL:
            out[key.decode()] = value  # (a copy already: sliced from the answer)
        else:
            out[key.decode()] = value_of(value_flags, key, value, take)
        if answered is not None:
            answered.append(key)
    return stale


def pipeline(
    pool: NodePool,
    op: Op,
    job: bytes,
    token: bytes,
    bodies: Iterable[list[Buffer]],
    *,
    flags: int = 0,
    ttl_ms: int = 0,
    map_version: int = 0,
    arena: SharedArena | None = None,
) -> list[Entry]:
    """Send one ``op`` frame per body of ``bodies`` (MULTI_PUT: entries; MULTI_GET: a key
    list) to one node, up to :data:`WINDOW` in flight; the node's result entries, in order
    (a MULTI_GET's values checked against their checksums).

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
        for body in bodies:
            if len(pending) == WINDOW:
                read(pending.pop(0))
            if refused is not None:
                break
            rid = conn.next_id()
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


def _frames(items: list[Item]) -> Iterator[list[Buffer]]:
    """MULTI_PUT bodies of at most BATCH_KEYS entries or BATCH_BYTES of values each.

    A body is encoded (its values hashed) only when the pipeline is about to send it, so
    the client encodes one frame while the node stores the one before."""
    out, keys, size = EntryWriter(), 0, 0
    for raw, view, flags in items:
        n = len(view)
        if keys and (keys == BATCH_KEYS or size + n > BATCH_BYTES):
            yield out.finish()
            out, keys, size = EntryWriter(), 0, 0
        out.add(raw, view, 0, flags, checksum(view))
        keys += 1
        size += n
    if keys:
        yield out.finish()


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
