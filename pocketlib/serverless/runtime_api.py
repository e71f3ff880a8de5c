"""The Lambda Runtime API on loopback, for one environment run by AWS's own runtime client.

AWS's Python runtime interface client (``awslambdaric``, from PyPI) polls
``GET /2018-06-01/runtime/invocation/next`` for an event, runs the handler, and posts the
result to ``.../invocation/{id}/response`` or an error to ``.../invocation/{id}/error`` (an
Init failure to ``/2018-06-01/runtime/init/error``). :class:`RuntimeApi` serves those endpoints
for one environment of a :class:`~pocketlib.serverless.runtime.LocalLambda`, so the same
handler runs under AWS's real client as under pocketlib's own environment process.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RuntimeApi"]

_BASE = "/2018-06-01/runtime"


class RuntimeApi:
    """Invocations in, answers out, for one runtime client process."""

    def __init__(self) -> None:
        self._next: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        #: What ``AWS_LAMBDA_RUNTIME_API`` is set to.
        self.address = f"{host!s}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def send(self, request: dict[str, Any]) -> None:
        """Hand an invocation to the client's next poll."""
        self._next.put(request)

    def read_answer(self) -> dict[str, Any] | None:
        """The next answer: ``{"payload": text}`` or ``{"error": {...}}``; None once closed."""
        return self._answers.get()

    def close(self) -> None:
        self._next.put(None)
        self._answers.put(None)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the client was killed
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    api: RuntimeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != f"{_BASE}/invocation/next":
            self._reply(404, b"")
            return
        request = self.api._next.get()
        if request is None:  # the environment is going away
            self.api._next.put(None)
            self._reply(500, b"")
            return
        self._reply(200, request["payload"].encode(), {
            "Lambda-Runtime-Aws-Request-Id": request["request_id"],
            "Lambda-Runtime-Deadline-Ms": str(request["deadline_ms"]),
            "Lambda-Runtime-Invoked-Function-Arn": request["arn"],
            "Lambda-Runtime-Trace-Id": f"Root=1-{request['request_id'][:8]}",
        })  # fmt: skip

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/response"):
            self.api._answers.put({"payload": body.decode()})
        elif self.path.endswith("/error"):
            error = json.loads(body or b"{}")
            if self.path == f"{_BASE}/init/error":
                error["errorType"] = self.headers.get(
                    "Lambda-Runtime-Function-Error-Type", error.get("errorType")
                )
            self.api._answers.put({"error": error})
        else:
            self._reply(404, b"")
            return
        self._reply(202, b'{"status":"OK"}')

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
