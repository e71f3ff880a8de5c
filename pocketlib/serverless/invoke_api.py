"""AWS Lambda's Invoke API on loopback, in front of a :class:`LocalLambda` (or anything that
invokes as it does: a :class:`Function`).

``POST /2015-03-31/functions/{name}/invocations`` with the ``X-Amz-Invocation-Type`` header
(RequestResponse, Event or DryRun), answered as AWS answers: 200 with the payload (and
``X-Amz-Function-Error: Unhandled`` when the function failed), 202 for an Event, 204 for a
DryRun, and AWS's error shape (``x-amzn-ErrorType`` and a JSON message) for a refused request,
so boto3's ``lambda_client.invoke`` works unchanged against it.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .invocation import Invocation, LambdaError

__all__ = ["Function", "InvokeServer"]

_PREFIX = "/2015-03-31/functions/"


class Function(Protocol):
    """What the Invoke API serves: a :class:`~pocketlib.serverless.runtime.LocalLambda`, seen
    only through its name, its ARN and its ``invoke`` (so this module need not import it)."""

    @property
    def name(self) -> str: ...

    @property
    def arn(self) -> str: ...

    def invoke(
        self, event: Any = None, *, invocation_type: str = "RequestResponse",
        payload: bytes | None = None,
    ) -> Invocation: ...  # fmt: skip


class InvokeServer:
    """The Invoke API of one LocalLambda, served from a background thread."""

    def __init__(self, function: Function, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"function": function})
        self._httpd = _Server((host, port), handler)
        self._httpd.daemon_threads = True
        bound_host, bound_port = self._httpd.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):  # a client that hung up is its own business
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    function: Function
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet, as a test server
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        name = self.path[len(_PREFIX) :].split("/")[0] if self.path.startswith(_PREFIX) else ""
        if not self.path.endswith("/invocations") or name.split(":")[-1] not in (
            self.function.name,
            self.function.arn.split(":")[-1],
        ):
            self._error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {self.function.arn.rsplit(':', 1)[0]}:{name}",
            )
            return
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind == "DryRun":
            self._send(204, b"", {})
            return
        try:
            result = self.function.invoke(payload=body or b"{}", invocation_type=kind)
        except LambdaError as exc:
            self._error(exc.http_status, exc.error_type, exc.message)
            return
        if kind == "Event":
            self._send(202, b"", {})
            return
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        self._send(200, result.payload, headers)

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "local")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
