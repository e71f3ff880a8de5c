"""An incremental (push) decoder of whole frames, for a caller that receives bytes in any
split: an event loop, a test, a proxy. The node and client read frames straight off their
sockets instead (:mod:`pocketlib.node.session`, :mod:`pocketlib.connection`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ProtocolError
from .protocol import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    RequestHeader,
    ResponseHeader,
    unpack_request,
    unpack_response,
)

__all__ = ["FrameDecoder", "Request", "Response"]


@dataclass(slots=True)
class Request:
    """A whole request, as :class:`FrameDecoder` yields it."""

    header: RequestHeader
    job: str
    token: bytes
    key: bytes
    value: bytes


@dataclass(slots=True)
class Response:
    """A whole response, as :class:`FrameDecoder` yields it."""

    header: ResponseHeader
    body: bytes


class FrameDecoder:
    """Incremental decoder: ``feed()`` any split of a byte stream, iterate whole frames.

    ``FrameDecoder("request")`` yields :class:`Request`, ``FrameDecoder("response")`` yields
    :class:`Response`. A malformed header raises ProtocolError (or VersionError); the stream is
    then out of step and the connection should be closed.
    """

    def __init__(self, kind: str = "request", max_value: int = 1 << 40) -> None:
        if kind not in ("request", "response"):
            raise ValueError("kind must be 'request' or 'response'")
        self._kind = kind
        self._buf = bytearray()
        self._max_value = max_value

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    def __iter__(self) -> Iterator[Request | Response]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def next_frame(self) -> Request | Response | None:
        """The next whole frame, or None until more bytes arrive."""
        if self._kind == "request":
            return self._next_request()
        return self._next_response()

    def _next_request(self) -> Request | None:
        size = REQUEST_HEADER.size
        if len(self._buf) < size:
            return None
        header = unpack_request(self._buf[:size])
        if header.body_len > self._max_value:
            raise ProtocolError(f"value of {header.length} bytes exceeds {self._max_value}")
        total = size + header.var_len + header.body_len
        if len(self._buf) < total:
            return None
        frame = bytes(self._buf[:total])
        del self._buf[:total]
        pos = size
        job = frame[pos : pos + header.job_len].decode("utf-8", "replace")
        pos += header.job_len
        token = frame[pos : pos + header.token_len]
        pos += header.token_len
        key = frame[pos : pos + header.key_len]
        pos += header.key_len
        return Request(header, job, token, key, frame[pos:])

    def _next_response(self) -> Response | None:
        size = RESPONSE_HEADER.size
        if len(self._buf) < size:
            return None
        header = unpack_response(self._buf[:size])
        if header.length > self._max_value:
            raise ProtocolError(f"body of {header.length} bytes exceeds {self._max_value}")
        total = size + header.length
        if len(self._buf) < total:
            return None
        body = bytes(self._buf[size:total])
        del self._buf[:total]
        return Response(header, body)
