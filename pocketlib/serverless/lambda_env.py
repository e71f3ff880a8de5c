"""One execution environment of the local Lambda runtime: the process a handler runs in.

Started by :class:`~pocketlib.serverless.runtime.LocalLambda` as
``python -m pocketlib.serverless.lambda_env HANDLER FD_IN FD_OUT``. It sets up what AWS's
Python runtime sets up (the context object, no /dev/shm semaphores), imports the handler once
(the Init phase), then serves invocations one at a time over two pipes, one JSON document per
line, until its parent closes the pipe. Globals, /tmp and sockets persist across invocations,
as in a warm Lambda environment.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["LambdaContext", "main"]


class LambdaContext:
    """The context object of AWS's Python runtime: the same attributes and types (values that
    AWS reads from environment variables are str, ``memory_limit_in_mb`` included)."""

    def __init__(self, request_id: str, deadline_ms: int, arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out (never below 0)."""
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message: str) -> None:
        """Write to the function's log (its stderr here)."""
        sys.stderr.write(message)
        sys.stderr.flush()


class _NoSemLock:
    """Lambda has no /dev/shm: creating a POSIX semaphore fails there, so
    ``multiprocessing.Queue()``, ``Lock()`` and ``Pool()`` raise ENOSYS as they do on AWS."""

    SEM_VALUE_MAX = 2**31 - 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")


def _without_dev_shm() -> None:
    import _multiprocessing  # type: ignore[import-not-found]

    _multiprocessing.SemLock = _NoSemLock
    try:
        import multiprocessing.shared_memory as shm

        shm.SharedMemory = _NoSemLock  # type: ignore[misc,assignment]
    except ImportError:
        pass


def _load(spec: str) -> Any:
    module, _, name = spec.rpartition(".") if ":" not in spec else spec.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _error(exc: BaseException) -> dict[str, Any]:
    """An exception as AWS's runtime reports it."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


def main(argv: list[str]) -> int:
    """Serve invocations of ``argv[0]`` over the pipes ``argv[1]`` (in) and ``argv[2]`` (out)."""
    spec, fd_in, fd_out = argv[0], int(argv[1]), int(argv[2])
    _without_dev_shm()
    inbox = os.fdopen(fd_in, "r", encoding="utf-8")
    outbox = os.fdopen(fd_out, "w", encoding="utf-8")
    try:
        handler = _load(spec)
        init: dict[str, Any] = {"ready": True}
    except BaseException as exc:  # an Init error is the invocation's answer
        handler, init = None, {"ready": False, "error": _error(exc)}
        init["error"]["errorType"] = "Runtime.ImportModuleError"
    outbox.write(json.dumps(init) + "\n")
    outbox.flush()
    for line in inbox:
        request = json.loads(line)
        context = LambdaContext(request["request_id"], request["deadline_ms"], request["arn"])
        try:
            assert handler is not None
            result = handler(json.loads(request["payload"]), context)
        except BaseException as exc:
            answer: dict[str, Any] = {"error": _error(exc)}
        else:
            try:
                answer = {"payload": json.dumps(result)}
            except (TypeError, ValueError) as exc:  # as AWS: the result is not JSON
                answer = {"error": _error(exc)}
                answer["error"]["errorType"] = "Runtime.MarshalError"
                answer["error"]["errorMessage"] = f"Unable to marshal response: {exc}"
        if "error" in answer:
            answer["error"]["requestId"] = request["request_id"]
        outbox.write(json.dumps(answer) + "\n")
        outbox.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
