"""The controller's TCP service: data-plane frames with JSON bodies, a thread per connection.

Control traffic is a registration now and then and a heartbeat per node per second, so the
simplest server serves it; the autoscaling loop runs on its own thread beside it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..bodies import decode_json, encode_json
from ..config import Address, JobHints
from ..errors import PocketError, ProtocolError, RequestError, status_for_error
from ..protocol import MAX_META_BODY, REQUEST_HEADER, Op, encode_response, unpack_request
from ..transport import shut_down, socket_reader, tune_socket
from .controller import Controller

__all__ = ["ControlServer"]

log = logging.getLogger("pocketlib.controller")

Handler = Callable[[dict[str, Any], str, bytes], dict[str, Any]]


class ControlServer:
    """Serve ``controller`` on ``host:port`` (0 picks a free port) and run its loop."""

    def __init__(
        self, controller: Controller, host: str = "127.0.0.1", port: int = 0,
        *, tick: float = 1.0, advertise: str | None = None,
    ) -> None:  # fmt: skip
        self.controller = controller
        self.tick_interval = tick
        self._listener = socket.create_server((host, port), backlog=256)
        bound = self._listener.getsockname()
        self.address = Address(bound[0], bound[1])
        controller.address = advertise or str(self.address)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        c = controller
        self._handlers: dict[int, Handler] = {
            Op.PING: lambda body, job, token: {},
            Op.NODE_REGISTER: lambda body, job, token: c.register_node(body, token),
            Op.NODE_HEARTBEAT: lambda body, job, token: c.heartbeat(body, token),
            Op.JOB_REGISTER: self._register_job,
            Op.JOB_DEREGISTER: lambda body, job, token: c.deregister_job(job, token),
            Op.JOB_INFO: lambda body, job, token: c.ticket(job, token, full=_full(body)).as_dict(),
            Op.CLUSTER_STATUS: lambda body, job, token: c.status(),
        }

    def _register_job(self, body: dict[str, Any], job: str, token: bytes) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str):
            raise RequestError("JOB_REGISTER needs a job name")
        hints = body.get("hints") or {}
        if not isinstance(hints, dict):
            raise RequestError("hints must be an object")
        return self.controller.register_job(name, JobHints.from_dict(hints)).as_dict()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ControlServer:
        """Serve and tick from background threads."""
        for target in (self._accept_loop, self._tick_loop):
            t = threading.Thread(target=target, name=f"pocket-controller-{target.__name__}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop serving and ticking (the nodes are the provisioner's to stop). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        shut_down(self._listener, self._open_connections)
        for t in self._threads:
            t.join(timeout=5)
        self.controller.close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._conns)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_interval):
            try:
                self.controller.tick()
            except Exception:  # the loop must outlive one bad tick; the log says why
                log.exception("controller tick failed")

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            tune_socket(conn)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- one connection -----------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        rfile = socket_reader(conn)
        header = bytearray(REQUEST_HEADER.size)
        try:
            while True:
                if rfile.readinto(header) != len(header):
                    return
                request_id = 0
                try:
                    h = unpack_request(header)
                    request_id = h.request_id
                    if h.length > MAX_META_BODY:
                        raise ProtocolError(f"request body of {h.length} bytes is too large")
                    var = _read(rfile, h.job_len + h.token_len + h.key_len + h.length)
                except PocketError as exc:
                    _reply_error(conn, request_id, exc)
                    return  # the stream cannot be trusted any more
                job = var[: h.job_len].decode("utf-8", "replace")
                token = var[h.job_len : h.job_len + h.token_len]
                body_start = h.job_len + h.token_len + h.key_len
                try:
                    handler = self._handlers.get(h.op)
                    if handler is None:
                        raise RequestError(f"opcode {h.op} is not a controller operation")
                    body = decode_json(var[body_start:]) if h.length else {}
                    out = encode_json(handler(body, job, token))
                except PocketError as exc:
                    _reply_error(conn, h.request_id, exc)
                    continue
                except Exception as exc:  # a bug must not kill the connection thread silently
                    log.exception("controller request %d failed", h.op)
                    _reply_error(conn, h.request_id, exc)
                    continue
                conn.sendall(encode_response(h.request_id, length=len(out)) + out)
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                rfile.close()
                conn.close()


def _read(rfile: Any, n: int) -> bytes:
    data: bytes = rfile.read(n) if n else b""
    if len(data) != n:
        raise OSError("peer closed mid-frame")
    return data


def _reply_error(conn: socket.socket, request_id: int, exc: BaseException) -> None:
    message = str(exc).encode("utf-8", "replace")[:4096]
    with contextlib.suppress(OSError):
        conn.sendall(
            encode_response(request_id, status_for_error(exc), length=len(message)) + message
        )


def _full(body: dict[str, Any]) -> str | None:
    """JOB_INFO's optional ``full``: the address of a node that refused a write for room."""
    full = body.get("full")
    if full is not None and not isinstance(full, str):
        raise RequestError("'full' must be a node address")
    return full or None
