"""One connection's footing on a storage node: its counters, its replies and its fences.

:class:`BaseSession` is what every layer of a session stands on: the socket and its reader, the
connection's counters (:class:`ConnStats`, summed by the node for STATS), error answers and
gathered replies, reading past a refused value, and the checks of a request's weight-map version
against the newest the node knows. It knows the node only as its :class:`NodeState`.
"""

from __future__ import annotations

import contextlib
import socket

from ..errors import PocketError, RequestError, StaleTicketError, status_for_error
from ..protocol import Buffer, Op, RequestHeader, encode_response
from ..transport import send_buffers, socket_reader
from .state import NodeState

__all__ = ["OP_NAMES", "BaseSession", "ConnStats", "Disconnected", "check_key"]

_DRAIN_CHUNK = 1 << 20
OP_NAMES = {int(op): op.name.lower() for op in Op}


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


class Disconnected(Exception):
    """The peer closed the connection mid-frame."""


class BaseSession:
    """The socket, counters and replies of one connection, and its weight-map checks."""

    def __init__(self, node: NodeState, conn: socket.socket) -> None:
        self.node = node
        self.tier = node.tier
        self.conn = conn
        self.rfile = socket_reader(conn)
        self.stats = ConnStats()

    # -- weight-map versions ------------------------------------------------------------------
    def stale(self, h: RequestHeader, job: str) -> bool:
        """Whether ``h`` was made under a ticket older than the job's newest map known here."""
        return 0 < h.map_version < self.node.map_versions.get(job, 0)

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
                raise Disconnected
            nbytes -= len(chunk)

    def count(self, bytes_in: int, bytes_out: int) -> None:
        stats = self.stats
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out


def check_key(key: str) -> None:
    if not key:
        raise RequestError("keys must not be empty")
