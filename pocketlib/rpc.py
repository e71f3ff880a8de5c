"""JSON calls over the wire protocol: how nodes and clients talk to the controller.

Control traffic is rare (a registration, a heartbeat a second), so its bodies are JSON; the
frames are the data plane's, so one decoder, one error mapping and one connection pool serve
both planes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from .bodies import decode_json, encode_json
from .config import Address, Timeouts
from .connection import Connection, NodePool
from .protocol import ResponseHeader, pack_request

__all__ = ["JsonChannel"]


class JsonChannel:
    """Request/response with JSON bodies to one peer, over pooled connections."""

    def __init__(self, address: str | Address, timeouts: Timeouts | None = None) -> None:
        self.address = Address.parse(address)
        self.pool = NodePool(self.address, timeouts or Timeouts(connect=5.0, io=30.0))
        self._ids = itertools.count(1)

    def call(
        self, op: int, body: Mapping[str, Any], *, job: str = "", token: bytes = b""
    ) -> dict[str, Any]:
        """Send ``body`` as ``op``; the peer's JSON answer, or its error raised.

        A pooled connection the peer closed while idle is retried once on a fresh one, so
        every control operation must be idempotent (they are: registering twice returns the
        same node, a job is deregistered once).
        """
        payload = encode_json(body)
        rid = next(self._ids) & 0xFFFFFFFF
        frame = pack_request(op, rid, 0, job.encode(), token, b"", 0, len(payload), 0, 0, 0, 0)
        frame += payload
        h, answer = self.pool.exchange((frame,), rid, _read_body)
        return decode_json(answer) if h.length else {}

    def close(self) -> None:
        """Close pooled connections."""
        self.pool.close()


def _read_body(conn: Connection, h: ResponseHeader) -> bytes:
    return conn.read_body(h.length)
