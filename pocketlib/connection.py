"""One client connection to a node, and the per-node pool of them.

A :class:`Connection` sends requests and reads responses in order (a node answers each
connection's requests in order, so several may be in flight). Response bodies are read with a
buffered reader whose ``read(n)`` fills the result object in place and whose ``readinto``
receives large bodies straight into the caller's buffer, so a GET costs no copy beyond the
kernel's.

:class:`NodePool` keeps idle connections per node. It is fork-safe: a process that forked
(PyWren and multiprocessing workers do) finds the pool empty and opens its own sockets instead
of sharing the parent's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .config import Address, Timeouts
from .errors import (
    CapacityError,
    ChecksumError,
    InvalidKeyError,
    PocketError,
    PocketTimeoutError,
    ProtocolError,
    TransportError,
    error_for_status,
)
from .protocol import RESPONSE_HEADER, ResponseHeader, checksum, unpack_response
from .transport import (
    map_os_error,
    send_buffers,
    set_io_timeout,
    socket_reader,
    translate_os_errors,
    tune_socket,
)

__all__ = ["OUT_OF_STEP", "Connection", "Deadline", "NodePool"]

T = TypeVar("T")

_READ_BUFFER = 256 * 1024
#: How far past a deadline a call may run (socket timeouts are reset only when they drift by
#: more): the margin a serverless handler keeps before its invocation's end absorbs it.
DEADLINE_SLACK = 0.05
#: Errors after which a connection is out of step with its node (the node hangs up after a
#: frame it cannot parse): it is dropped. After any other error the node answered, and the
#: connection may serve the next request.
OUT_OF_STEP = (TransportError, ProtocolError, InvalidKeyError)
_DRAIN_CHUNK = 1 << 20


class Deadline:
    """When the calls of a client must end (``time.monotonic()``), or None for no deadline.

    A serverless handler sets it for the length of an invocation, so that a call blocked on a
    node raises PocketTimeoutError before the platform kills the function; a client's pools
    share it, and each request's socket timeouts are cut to the time left.
    """

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def left(self, peer: str) -> float:
        """Seconds until the deadline; PocketTimeoutError if it has passed."""
        assert self.at is not None
        left = self.at - time.monotonic()
        if left <= 0:
            raise PocketTimeoutError(f"the call's deadline passed before {peer} was asked")
        return left


class Connection:
    """A socket to one node with a buffered reader for responses."""

    def __init__(self, address: Address, timeouts: Timeouts, left: float | None = None) -> None:
        self.address = address
        self.peer = str(address)
        #: Whether its socket timeouts were cut to a deadline (``left`` seconds).
        self.bounded = left is not None
        connect = timeouts.connect if left is None else _least(timeouts.connect, left)
        with translate_os_errors(self.peer, connecting=True):
            self.sock = socket.create_connection((address.host, address.port), timeout=connect)
        #: The longest wait of one send or receive now set on the socket.
        self.io_timeout = timeouts.io if left is None else _least(timeouts.io, left)
        tune_socket(self.sock, self.io_timeout)
        self._rfile = socket_reader(self.sock, _READ_BUFFER)
        self._header = bytearray(RESPONSE_HEADER.size)
        self._next_id = 0
        self.reused = False
        self.generation = _fork_generation

    def bound(self, left: float | None, timeouts: Timeouts) -> None:
        """Cut the socket's timeouts to ``left`` seconds (None: back to ``timeouts``).

        A timeout within :data:`DEADLINE_SLACK` of the one wanted is left as it is: setting
        one costs two system calls, about as much as a small request's own work."""
        wanted = timeouts.io if left is None else _least(timeouts.io, left)
        bounded = left is not None
        if bounded == self.bounded and _close(self.io_timeout, wanted):
            return
        set_io_timeout(self.sock, wanted)
        self.io_timeout, self.bounded = wanted, bounded

    def next_id(self) -> int:
        """A request id for the next request on this connection."""
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return self._next_id

    def send(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Send one or more frames' buffers."""
        try:
            send_buffers(self.sock, parts)
        except OSError as exc:
            raise map_os_error(exc, self.peer) from exc

    def read_header(self, request_id: int) -> ResponseHeader:
        """The next response header; raises the node's error if the request failed."""
        try:
            n = self._rfile.readinto(self._header)
        except OSError as exc:
            raise map_os_error(exc, self.peer) from exc
        if n != len(self._header):
            raise TransportError(f"{self.peer} closed the connection")
        h = unpack_response(self._header)
        if h.request_id != request_id and h.request_id != 0:
            raise ProtocolError(f"response for request {h.request_id}, expected {request_id}")
        if h.status:
            message = self.read_body(h.length).decode("utf-8", "replace")
            error = error_for_status(h.status, f"{message} (node {self.peer})")
            if isinstance(error, CapacityError):
                error.node = self.peer  # (the job's ticket may then send writes elsewhere)
            raise error
        return h

    def read_body(self, n: int) -> bytes:
        """Exactly ``n`` body bytes."""
        if n == 0:
            return b""
        try:
            data = self._rfile.read(n)
        except OSError as exc:
            raise map_os_error(exc, self.peer) from exc
        if len(data) != n:
            raise TransportError(f"{self.peer} closed the connection mid-response")
        return data

    def read_value(self, h: ResponseHeader) -> bytes:
        """The body of a value-carrying response, checked against its checksum."""
        data = self.read_body(h.length)
        if checksum(data) != h.checksum:
            raise ChecksumError(f"checksum mismatch on a value from {self.peer}")
        return data

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the stream (large bodies go straight into it)."""
        try:
            n = self._rfile.readinto(view)
        except OSError as exc:
            raise map_os_error(exc, self.peer) from exc
        if n != len(view):
            raise TransportError(f"{self.peer} closed the connection mid-response")

    def drain(self, n: int) -> None:
        """Skip ``n`` body bytes (to stay in step after refusing a response)."""
        while n > 0:
            n -= len(self.read_body(min(n, _DRAIN_CHUNK)))

    def close(self) -> None:
        """Close the socket (never raises)."""
        with contextlib.suppress(OSError):
            self._rfile.close()
            self.sock.close()


# Bumped in a child process right after fork(): pools and connections from an older
# generation belong to the parent. Checked with one integer compare instead of a getpid()
# system call on every request.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class NodePool:
    """Idle connections to one node, reused across requests and threads."""

    def __init__(
        self,
        address: Address,
        timeouts: Timeouts,
        max_idle: int = 16,
        deadline: Deadline | None = None,
    ) -> None:
        self.address = address
        self.timeouts = timeouts
        self.max_idle = max_idle
        self.deadline = deadline
        self._generation = _fork_generation
        # deque.append/pop are atomic: no lock needed on the request path.
        self._idle: deque[Connection] = deque()

    def _after_fork(self) -> None:
        # A forked child: the parent's sockets are not ours to use. Close our copies of the
        # file descriptors (no shutdown, which would cut the parent's connections too).
        idle, self._idle = self._idle, deque()
        for conn in idle:
            conn.close()
        self._generation = _fork_generation

    def acquire(self) -> Connection:
        """An idle connection, or a new one."""
        if self._generation != _fork_generation:
            self._after_fork()
        deadline = self.deadline
        left = None
        if deadline is not None and deadline.at is not None:
            left = deadline.left(str(self.address))
        try:
            conn = self._idle.pop()
        except IndexError:
            return Connection(self.address, self.timeouts, left)
        conn.reused = True
        if left is not None or conn.bounded:
            try:
                conn.bound(left, self.timeouts)
            except OSError:
                conn.close()
                return Connection(self.address, self.timeouts, left)
        return conn

    def drop_idle(self) -> None:
        """Close the idle connections (after a freeze they may be dead without knowing)."""
        idle, self._idle = self._idle, deque()
        for conn in idle:
            conn.close()

    def release(self, conn: Connection) -> None:
        """Return a connection that is in step (every response it was owed was read)."""
        if conn.generation == _fork_generation and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def discard_or_release(self, conn: Connection, exc: BaseException) -> None:
        """After ``exc`` broke an exchange: keep ``conn`` only if it is still in step."""
        # The node hangs up after a frame it cannot parse (ProtocolError, VersionError,
        # InvalidKeyError); other errors it answers and keeps serving the connection.
        if isinstance(exc, PocketError) and not isinstance(exc, OUT_OF_STEP):
            self.release(conn)  # the node answered with an error: still in step
        else:
            conn.close()

    def exchange(
        self,
        parts: Sequence[bytes | bytearray | memoryview],
        rid: int,
        read: Callable[[Connection, ResponseHeader], T] | None = None,
        *,
        retry: bool = True,
    ) -> tuple[ResponseHeader, T | bytes]:
        """Send one framed request (``parts``) and read its response (``read`` consumes the
        body; default: read it as bytes).

        A request on a pooled connection that the node closed while it sat idle is retried
        once on a fresh connection when ``retry`` (the request is idempotent).
        """
        while True:
            conn = self.acquire()
            try:
                if len(parts) == 1:  # one small send, no gathered write
                    try:
                        conn.sock.sendall(parts[0])
                    except OSError as exc:
                        raise map_os_error(exc, conn.peer) from exc
                else:
                    conn.send(parts)
                h = conn.read_header(rid)
                result = read(conn, h) if read else conn.read_body(h.length)
            except PocketTimeoutError:
                conn.close()
                raise
            except TransportError:
                conn.close()
                if retry and conn.reused:
                    retry = False
                    continue  # a stale pooled socket: the node closed it while it was idle
                raise
            except BaseException as exc:
                self.discard_or_release(conn, exc)
                raise
            self.release(conn)
            return h, result

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for one exchange; dropped instead of reused if the exchange broke."""
        conn = self.acquire()
        try:
            yield conn
        except BaseException as exc:
            self.discard_or_release(conn, exc)
            raise
        self.release(conn)

    def close(self) -> None:
        """Close idle connections."""
        self.drop_idle()


def _least(timeout: float | None, left: float) -> float:
    return left if timeout is None else min(timeout, left)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= DEADLINE_SLACK
