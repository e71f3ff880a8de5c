"""Socket plumbing shared by the client and the node, and the one OS-error boundary.

:func:`translate_os_errors` is the single place where socket and OS errors become
PocketError subclasses; nothing else in pocketlib catches ``OSError`` to re-raise it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence

from .errors import ConnectError, PocketTimeoutError, TransportError

__all__ = ["send_buffers", "tune_socket", "translate_os_errors"]

_IOV_MAX = 512  # below the kernel's 1024 vectors per sendmsg


def tune_socket(sock: socket.socket) -> None:
    """Low latency for small frames, keepalive so dead peers are noticed."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def send_buffers(sock: socket.socket, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Send every buffer in order with gathered writes (no joining copy)."""
    if len(parts) == 1:
        sock.sendall(parts[0])
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


@contextlib.contextmanager
def translate_os_errors(peer: str, *, connecting: bool = False) -> Iterator[None]:
    """Turn OS and socket errors into TransportError subclasses naming the peer."""
    try:
        yield
    except TimeoutError as exc:  # socket.timeout is TimeoutError since 3.10
        raise PocketTimeoutError(f"timed out talking to {peer}") from exc
    except OSError as exc:
        if connecting:
            raise ConnectError(f"cannot connect to {peer}: {exc.strerror or exc}") from exc
        raise TransportError(f"connection to {peer} failed: {exc.strerror or exc}") from exc
