"""The executor's Lambda backends: its calls run as invocations of one generic handler.

Deploy a function whose handler is ``pocketlib.serverless.lambda_backend.handle`` (with
pocketlib in its package); the executor invokes it once per call, synchronously, from a pool of
threads. The event carries the task and its arguments, pickled and base64-encoded; arguments
and results above the executor's threshold already travel by reference through the job, and
the threshold is cut so that what remains fits Lambda's 6 MB payload. A function's exception
comes back pickled, with its traceback as text.

Two invokers: a :class:`~pocketlib.serverless.runtime.LocalLambda` (``backend=LocalLambda(...)``
or ``backend="lambda"``), and AWS Lambda through boto3 (``backend="aws"``, ``function_name``,
optionally ``endpoint_url`` to run against a LocalLambda's Invoke API).
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, PocketError
from .tasks import _map_task, _reduce_task, _run

__all__ = ["HANDLER", "LambdaBackend", "RemoteTraceback", "handle"]

#: The handler a Lambda function deployed for the executor names.
HANDLER = "pocketlib.serverless.lambda_backend.handle"
#: Largest pickled task (or result) sent inline: base64 makes it 4/3 larger, and the event's
#: JSON needs room around it, under the 6,291,456 bytes of a synchronous invoke.
MAX_INLINE = 4 * 1024 * 1024

#: invoke(payload bytes) -> (response payload bytes, AWS's FunctionError or None)
Invoker = Callable[[bytes], tuple[bytes, str | None]]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a Lambda function (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class LambdaBackend:
    """Runs executor tasks as Lambda invocations, ``concurrency`` at a time."""

    def __init__(self, invoke: Invoker, concurrency: int) -> None:
        self._invoke = invoke
        self._threads = cf.ThreadPoolExecutor(max_workers=concurrency)

    def submit(self, task: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        """``task(*args)`` in a Lambda invocation; its future."""
        blob = pickle.dumps((task.__name__, args), protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) > MAX_INLINE:
            raise ConfigError(f"a task of {len(blob)} bytes does not fit an invoke: lower the "
                              "executor's threshold so that arguments go by reference")  # fmt: skip
        event = json.dumps({"pocket_task": base64.b64encode(blob).decode()}).encode()
        return self._threads.submit(self._call, event)

    def _call(self, event: bytes) -> Any:
        payload, function_error = self._invoke(event)
        answer = json.loads(payload)
        if function_error:  # the runtime's own error: a timeout, out of memory, an import
            raise PocketError(f"{answer.get('errorType')}: {answer.get('errorMessage')}")
        if "error" in answer:
            exc: BaseException = pickle.loads(base64.b64decode(answer["error"]))
            exc.__cause__ = RemoteTraceback(answer.get("traceback", ""))
            raise exc
        return pickle.loads(base64.b64decode(answer["result"]))

    def shutdown(self, wait: bool = True) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=not wait)


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The generic handler: run the task the event carries; its pickled result or error."""
    name, args = pickle.loads(base64.b64decode(event["pocket_task"]))
    tasks: dict[str, Callable[..., Any]] = {
        "_run": _run, "_map_task": _map_task, "_reduce_task": _reduce_task,
    }  # fmt: skip
    task = tasks[name]
    try:
        result = task(*args)
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        try:
            blob = pickle.dumps(exc)
        except Exception:  # an exception that does not pickle: its type and message
            blob = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        return {"error": base64.b64encode(blob).decode(), "traceback": text}
    return {"result": base64.b64encode(pickle.dumps(result)).decode()}


def local_invoker(function: Any) -> Invoker:
    """Invoke through a :class:`LocalLambda`."""

    def invoke(event: bytes) -> tuple[bytes, str | None]:
        out = function.invoke(payload=event)
        return out.payload, out.function_error

    return invoke


def aws_invoker(function_name: str, **client_args: Any) -> Invoker:
    """Invoke through boto3's Lambda client (``client_args``: region_name, endpoint_url...)."""
    import boto3

    client = boto3.client("lambda", **client_args)

    def invoke(event: bytes) -> tuple[bytes, str | None]:
        reply = client.invoke(FunctionName=function_name, Payload=event)
        return reply["Payload"].read(), reply.get("FunctionError")

    return invoke
