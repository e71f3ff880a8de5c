"""What an invoke of a Lambda function comes back with: an :class:`Invocation` (its payload,
and how the function failed if it did), or a :class:`LambdaError` when AWS refuses the request.
Shared by :class:`~pocketlib.serverless.runtime.LocalLambda`, which makes them, and the Invoke
API (:mod:`pocketlib.serverless.invoke_api`), which answers with them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import PocketError

__all__ = ["Invocation", "LambdaError"]


class LambdaError(PocketError):
    """An invoke that AWS refuses (``error_type`` is AWS's exception name, ``status`` its HTTP
    status), as boto3 would raise it as a ClientError."""

    def __init__(self, error_type: str, message: str, http_status: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type, self.message, self.http_status = error_type, message, http_status


@dataclass
class Invocation:
    """What an invoke returned: the payload bytes and, if the function failed, how."""

    payload: bytes
    #: "Unhandled" when the function raised, timed out or was killed (AWS's FunctionError).
    function_error: str | None = None
    cold: bool = False

    def json(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload)
