"""Socket plumbing shared by the client and the node, and the one OS-error boundary.

:func:`translate_os_errors` is the single place where socket and OS errors become
PocketError subclasses; nothing else in pocketlib catches ``OSError`` to re-raise it.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence

from .errors import ConnectError, PocketTimeoutError, TransportError

__all__ = [
    "boot_id",
    "map_os_error",
    "send_buffers",
    "set_io_timeout",
    "shut_down",
    "socket_reader",
    "translate_os_errors",
    "tune_socket",
]

_IOV_MAX = 512  # below the kernel's 1024 vectors per sendmsg
_JOIN_LIMIT = 16 * 1024


def tune_socket(sock: socket.socket, io_timeout: float | None = None) -> None:
    """Low latency for small frames, keepalive so dead peers are noticed.

    A timeout is set in the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket rather than
    with ``settimeout``, which would add a poll() before every send and receive; a read or
    write that times out fails with EAGAIN, which :func:`map_os_error` reports as a timeout.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(None)
    if io_timeout is not None:
        set_io_timeout(sock, io_timeout)


def set_io_timeout(sock: socket.socket, seconds: float | None) -> None:
    """The longest wait of any one send or receive on a socket :func:`tune_socket` set up
    (None or 0: no limit)."""
    seconds = seconds or 0.0
    sec = int(seconds)
    timeval = struct.pack("ll", sec, max(int((seconds - sec) * 1e6), 1 if seconds else 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class _SocketRaw(io.RawIOBase):
    """A raw reader whose ``readinto`` *is* the socket's C ``recv_into``.

    ``socket.makefile`` wraps the socket in a Python-level reader that costs a frame per read
    and turns a kernel receive timeout (EAGAIN) into a short read, indistinguishable from the
    peer closing. Here the buffered reader calls ``recv_into`` directly and a timeout raises.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.readinto = sock.recv_into  # type: ignore[method-assign]

    def readable(self) -> bool:
        return True


def socket_reader(sock: socket.socket, buffer_size: int = 256 * 1024) -> io.BufferedReader:
    """A buffered reader over ``sock``: ``read(n)`` fills its result in place, and large
    ``readinto`` calls receive straight into the caller's buffer."""
    return io.BufferedReader(_SocketRaw(sock), buffer_size)


def send_buffers(sock: socket.socket, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Send every buffer in order with gathered writes (no joining copy)."""
    if len(parts) == 1:
        sock.sendall(parts[0])
        return
    if sum(len(p) for p in parts) <= _JOIN_LIMIT:
        sock.sendall(b"".join(parts))  # one copy of a small frame beats a gathered write
        return
    pending = [memoryview(p).cast("B") for p in parts if len(p)]
    while pending:
        batch = pending[:_IOV_MAX]
        sent = sock.sendmsg(batch)
        # Drop what went out; keep the unsent tail of a partly sent buffer.
        i = 0
        while i < len(batch) and sent >= len(batch[i]):
            sent -= len(batch[i])
            i += 1
        del pending[:i]
        if sent:
            pending[0] = pending[0][sent:]


def map_os_error(exc: OSError, peer: str, *, connecting: bool = False) -> TransportError:
    """The TransportError subclass an OS or socket error stands for (raise it ``from exc``)."""
    if isinstance(exc, (TimeoutError, BlockingIOError)):  # kernel timeouts raise EAGAIN
        return PocketTimeoutError(f"timed out talking to {peer}")
    if connecting:
        return ConnectError(f"cannot connect to {peer}: {exc.strerror or exc}")
    return TransportError(f"connection to {peer} failed: {exc.strerror or exc}")


@contextlib.contextmanager
def translate_os_errors(peer: str, *, connecting: bool = False) -> Iterator[None]:
    """Turn OS and socket errors raised inside the block into TransportErrors."""
    try:
        yield
    except OSError as exc:
        raise map_os_error(exc, peer, connecting=connecting) from exc


def shut_down(listener: socket.socket, connections: Callable[[], Iterable[socket.socket]]) -> None:
    """Stop a server: no new connections, then every open one (``connections()``, asked once
    the listener is shut, so none accepted meanwhile escapes) woken from its blocking read; its
    serving thread then sees the end of the stream and exits. Never raises."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for conn in connections():
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


def boot_id() -> str:
    """This boot of this host: equal on both sides only when client and node share a kernel."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""
