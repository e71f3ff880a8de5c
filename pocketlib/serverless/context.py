"""What a function needs to know about AWS Lambda: its payload limits, whether it runs there,
and how much time its invocation has left."""

from __future__ import annotations

import os
from typing import Any, Literal

from ..errors import ConfigError

__all__ = [
    "ASYNC_PAYLOAD_LIMIT",
    "SYNC_PAYLOAD_LIMIT",
    "Invocation",
    "in_lambda",
    "payload_limit",
    "seconds_left",
]

#: Bytes of a synchronous (RequestResponse) invoke's request or response (AWS: 6 MB).
SYNC_PAYLOAD_LIMIT = 6_291_456
#: Bytes of an asynchronous (Event) invoke's request (AWS: 1 MB since October 2025).
ASYNC_PAYLOAD_LIMIT = 1_048_576

#: How a function is invoked: its payload limit depends on it.
Invocation = Literal["sync", "async"]


def payload_limit(invocation: Invocation = "sync") -> int:
    """The payload limit of an invocation type."""
    if invocation == "sync":
        return SYNC_PAYLOAD_LIMIT
    if invocation == "async":
        return ASYNC_PAYLOAD_LIMIT
    raise ConfigError(f"invocation is 'sync' or 'async', not {invocation!r}")


def in_lambda() -> bool:
    """Whether this process is a Lambda function (its runtime sets these variables)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("AWS_EXECUTION_ENV"))


def seconds_left(context: Any) -> float | None:
    """Seconds the invocation has left, from a Lambda context (None without one)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return float(remaining()) / 1000.0
