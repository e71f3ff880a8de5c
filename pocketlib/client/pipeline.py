"""Pipelined MULTI frames: many frames per node on one pooled connection, every node at once.

A batch that spans several nodes is one :class:`Call` per node. :func:`run` sends each node up
to :data:`WINDOW` frames before reading any answer, then reads the nodes' answers in turn,
sending each node its next frame as one of its answers is read. So every node stores or reads
its part while the others do theirs, and the client encodes the next frame of one node while
the nodes work, instead of waiting for one node to finish before the next begins.

The window bounds how much a node may have to answer while the client is still sending, so
neither side's socket buffers fill up and stall the other. A node that fails (it cannot be
reached, or breaks the exchange) ends its own call only: the others run to their end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..bodies import Entry, decode_entries
from ..connection import OUT_OF_STEP, Connection, NodePool
from ..errors import ChecksumError, PocketError
from ..protocol import Buffer, Flag, Op, checksum, encode_request
from . import shared

if TYPE_CHECKING:
    from .arena import SharedArena

__all__ = ["WINDOW", "Call", "Outcome", "pipeline", "run"]

#: Frames in flight per connection.
WINDOW = 8


@dataclass
class Call:
    """One node's share of a batch: one ``op`` frame per body of ``bodies`` (MULTI_PUT:
    entries; MULTI_GET: a key list), encoded only as it is sent. With ``arena`` (the node's
    tier mapped into this process), a MULTI_GET's large values are answered as places in the
    arena and copied from there, not through the socket."""

    pool: NodePool
    op: Op
    job: bytes
    token: bytes
    bodies: Iterable[list[Buffer]]
    flags: int = 0
    ttl_ms: int = 0
    map_version: int = 0
    arena: SharedArena | None = None


@dataclass
class Outcome:
    """What one call got: the node's result entries in order (a MULTI_GET's values checked
    against their checksums), and the error that ended it early, if one did. Entries read
    before the error are kept: a delete-after-read value they hold is taken already."""

    entries: list[Entry]
    error: PocketError | None = None


def run(calls: Sequence[Call]) -> list[Outcome]:
    """Each call's outcome, in the order of ``calls``, the nodes working at once.

    A batch a node refuses as a whole (a stale ticket, a draining node, a wrong token) stops
    that node's sending; the answers to its frames already sent are read before its outcome is
    final, so its connection goes back to the pool in step."""
    streams = [_Stream(call) for call in calls]
    try:
        active = streams
        while active:
            active = [s for s in active if s.step()]
    except BaseException as exc:  # not a node's failure (those end their stream): drop all
        for s in streams:
            s.abandon(exc)
        raise
    return [s.outcome for s in streams]


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
    """One node's :class:`Call`: its result entries, or the error that ended it."""
    (outcome,) = run([Call(pool, op, job, token, bodies, flags, ttl_ms, map_version, arena)])
    if outcome.error is not None:
        raise outcome.error
    return outcome.entries


class _Stream:
    """A call in progress on one connection."""

    __slots__ = ("bodies", "call", "conn", "flags", "outcome", "pending", "sending")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.bodies: Iterator[list[Buffer]] = iter(call.bodies)
        self.flags = call.flags
        if call.arena is not None and call.op == Op.MULTI_GET:
            self.flags |= Flag.SHARED
        self.conn: Connection | None = None
        self.pending: deque[int] = deque()
        self.sending = True
        self.outcome = Outcome([])

    def step(self) -> bool:
        """Take a connection (the first step) or read one answer, then send what the window
        allows; whether there is more to do."""
        try:
            if self.conn is None:
                self.conn = self.call.pool.acquire()
            else:
                self._read(self.pending.popleft())
            self._fill()
        except PocketError as exc:
            self._fail(exc)
            return False
        return self._more()

    def _more(self) -> bool:
        if self.pending:
            return True
        if self.conn is not None:  # every answer read: in step
            self.call.pool.release(self.conn)
            self.conn = None
        return False

    def _fill(self) -> None:
        conn, call = self.conn, self.call
        assert conn is not None
        while self.sending and len(self.pending) < WINDOW:
            body = next(self.bodies, None)
            if body is None:
                self.sending = False
                return
            rid = conn.next_id()
            head = encode_request(
                call.op, rid, call.job, call.token, length=sum(len(b) for b in body),
                flags=self.flags, ttl_ms=call.ttl_ms, map_version=call.map_version,
            )  # fmt: skip
            conn.send([head, *body])
            self.pending.append(rid)

    def _read(self, rid: int) -> None:
        conn, call = self.conn, self.call
        assert conn is not None
        try:
            h = conn.read_header(rid)
            answer = decode_entries(conn.read_body(h.length))
            if call.op == Op.MULTI_GET:
                _check_values(conn, answer, call.arena, (call.job, call.token), rid)
            self.outcome.entries.extend(answer)
        except PocketError as exc:
            if isinstance(exc, OUT_OF_STEP):
                raise
            # Refused as a whole (or a value failed its check): send no more, read the rest.
            self.sending = False
            self.outcome.error = self.outcome.error or exc

    def _fail(self, exc: PocketError) -> None:
        """The exchange broke: the connection is dropped (or kept, if still in step)."""
        self.outcome.error = self.outcome.error or exc
        self.pending.clear()
        if self.conn is not None:
            self.call.pool.discard_or_release(self.conn, exc)
            self.conn = None

    def abandon(self, exc: BaseException) -> None:
        if self.conn is not None:
            self.call.pool.discard_or_release(self.conn, exc)
            self.conn = None


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
