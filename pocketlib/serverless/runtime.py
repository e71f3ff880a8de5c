"""``LocalLambda``: AWS Lambda on this machine, as strict as AWS about what a function may do.

Each execution environment is a process (:mod:`pocketlib.serverless.lambda_env`): a cold start
starts one and imports the handler, a warm invocation reuses an idle one (globals, sockets and
its private /tmp persist), and N concurrent invocations make N environments. The limits are
AWS's, with AWS's error types and messages: the timeout (the environment is killed), the memory
size (an environment whose resident memory exceeds it is killed), the payload sizes (6,291,456
bytes each way for a synchronous invoke, 1,048,576 for an asynchronous one), and no /dev/shm
semaphores. :meth:`LocalLambda.serve` adds AWS's Invoke API on 127.0.0.1, so unmodified boto3
code (``lambda_client.invoke(...)``) runs against it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..control.processes import terminate
from ..errors import ConfigError
from .context import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT
from .invocation import Invocation, LambdaError

if TYPE_CHECKING:
    from .runtime_api import RuntimeApi

__all__ = ["LocalLambda"]

#: The largest response AWS's runtime passes on (its emulator's cap: 6 MiB and 100 bytes).
RESPONSE_LIMIT = 6 * 1024 * 1024 + 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


#: How an environment runs AWS's runtime interface client: without /dev/shm semaphores, as
#: pocketlib's own environment process, then ``python -m awslambdaric HANDLER``.
_RIC_BOOT = (
    "import runpy, sys; from pocketlib.serverless.lambda_env import _without_dev_shm; "
    "_without_dev_shm(); sys.argv = ['awslambdaric', sys.argv[1]]; "
    "runpy.run_module('awslambdaric', run_name='__main__', alter_sys=True)"
)


class _Environment:
    """One environment process, and its channel: two pipes to pocketlib's environment process,
    or the Runtime API that AWS's runtime interface client polls (``ric``)."""

    def __init__(self, spec: str, env: Mapping[str, str], ric: bool = False) -> None:
        self.tmp = tempfile.mkdtemp(prefix="lambda-tmp-")
        self.api: RuntimeApi | None = None
        self.inbox: Any = None
        self.outbox: Any = None
        if ric:
            from .runtime_api import RuntimeApi

            self.api = RuntimeApi()
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _RIC_BOOT, spec],
                env={**env, "TMPDIR": self.tmp, "AWS_LAMBDA_RUNTIME_API": self.api.address},
            )  # fmt: skip
            self.init: dict[str, Any] | None = {"ready": True}  # (its errors come as answers)
            return
        to_child, w = os.pipe()
        r, from_child = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pocketlib.serverless.lambda_env", spec, str(to_child),
             str(from_child)],
            pass_fds=(to_child, from_child), env={**env, "TMPDIR": self.tmp},
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self.inbox = os.fdopen(r, "r", encoding="utf-8")
        self.outbox = os.fdopen(w, "w", encoding="utf-8")
        self.init = self.read_answer()

    def send(self, request: dict[str, Any]) -> None:
        """Hand the environment one invocation."""
        if self.api is not None:
            self.api.send(request)
            return
        self.outbox.write(json.dumps(request) + "\n")
        self.outbox.flush()

    def read_answer(self) -> dict[str, Any] | None:
        """The environment's next answer; None if it is gone."""
        if self.api is not None:
            return self.api.read_answer()
        try:
            line = self.inbox.readline()
        except (OSError, ValueError):
            return None
        return json.loads(line) if line else None

    def peak_rss(self) -> int:
        """Resident bytes of the environment now (0 once it is gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/statm") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return 0

    def freeze(self) -> None:
        """Stop the process between invocations, as Lambda freezes an idle environment: its
        threads and timers stop, and its sockets are left unread."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        for f in (self.inbox, self.outbox):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        if self.api is not None:
            self.api.close()
        self.thaw()  # (a stopped process takes no SIGTERM)
        terminate(self.proc, timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


class LocalLambda:
    """A Lambda function run locally: ``handler`` is ``"module.function"`` (or a function
    defined at module level), run with ``memory_mb`` and ``timeout_s`` as on AWS."""

    def __init__(
        self,
        handler: str | Callable[..., Any],
        *,
        name: str = "function",
        memory_mb: int = 1024,
        timeout_s: float = 30.0,
        env: Mapping[str, str] | None = None,
        freeze: bool = True,
        runtime: str = "pocketlib",
    ) -> None:
        if callable(handler):
            module = getattr(handler, "__module__", None)
            if not module or module == "__main__" or "<locals>" in handler.__qualname__:
                raise ConfigError("a handler must be importable: define it at module level")
            handler = f"{module}.{handler.__qualname__}"
        if not 128 <= memory_mb <= 10_240:
            raise ConfigError(f"memory is 128 to 10,240 MB on AWS, not {memory_mb}")
        if not 0 < timeout_s <= 900:
            raise ConfigError(f"a timeout is at most 900 s on AWS, not {timeout_s}")
        self.handler, self.name = handler, name
        self.memory_mb, self.timeout_s = memory_mb, timeout_s
        self.arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
        self._env = {
            **os.environ, **(env or {}),
            "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb), "AWS_REGION": "us-east-1",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "_HANDLER": handler,
            "POCKET_SHARED_MEMORY": "0",
        }  # fmt: skip
        #: Whether idle environments are frozen (SIGSTOP) until their next invocation.
        self.freeze = freeze
        if runtime not in ("pocketlib", "awslambdaric"):
            raise ConfigError(f"runtime is 'pocketlib' or 'awslambdaric', not {runtime!r}")
        #: What runs the handler: pocketlib's environment process, or AWS's runtime
        #: interface client (awslambdaric) polling a Runtime API served here.
        self.runtime = runtime
        self._idle: list[_Environment] = []
        self._lock = threading.Lock()
        self._closed = False
        self._server: Any = None
        #: Environments started (cold starts) and invocations served.
        self.cold_starts = 0
        self.invocations = 0

    # -- invoking -----------------------------------------------------------------------------
    def invoke(self, event: Any = None, *, invocation_type: str = "RequestResponse",
               payload: bytes | None = None) -> Invocation:  # fmt: skip
        """Invoke with ``event`` (or raw ``payload`` bytes) as AWS would: LambdaError for a
        refused request; an ``Invocation`` with ``function_error`` if the function failed. An
        ``"Event"`` invoke returns at once with an empty payload and runs in the background."""
        raw = payload if payload is not None else json.dumps(event).encode()
        if invocation_type == "Event":
            if len(raw) > ASYNC_PAYLOAD_LIMIT:
                raise LambdaError("RequestEntityTooLargeException", f"{len(raw)} byte payload is "
                                  f"too large for the Event invocation type (limit "
                                  f"{ASYNC_PAYLOAD_LIMIT} bytes)", 413)  # fmt: skip
            threading.Thread(target=self._run, args=(raw,), daemon=True).start()
            return Invocation(b"")
        if invocation_type != "RequestResponse":
            raise LambdaError("InvalidParameterValueException",
                              f"unsupported invocation type {invocation_type!r}", 400)  # fmt: skip
        if len(raw) > SYNC_PAYLOAD_LIMIT:
            raise LambdaError("RequestEntityTooLargeException", f"Request must be smaller than "
                              f"{SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation",
                              413)  # fmt: skip
        return self._run(raw)

    def _run(self, raw: bytes) -> Invocation:
        env, cold = self._take()
        request_id = str(uuid.uuid4())
        if env.init is None or not env.init["ready"]:
            error = (env.init or {}).get("error") or _aws_error(
                "Runtime.ExitError", "Runtime exited before it was ready", request_id)  # fmt: skip
            env.kill()
            return Invocation(json.dumps(error).encode(), "Unhandled", cold)
        deadline = time.time() + self.timeout_s
        request = {"request_id": request_id, "deadline_ms": int(deadline * 1000),
                   "arn": self.arn, "payload": raw.decode()}  # fmt: skip
        answer = self._exchange(env, request, deadline)
        self.invocations += 1
        if "payload" in answer:
            out = answer["payload"].encode()
            if len(out) > RESPONSE_LIMIT:
                self._give_back(env)
                error = _aws_error("Function.ResponseSizeTooLarge", f"Response payload size "
                                   f"({len(out)} bytes) exceeded maximum allowed payload size "
                                   f"({RESPONSE_LIMIT} bytes).", request_id)  # fmt: skip
                return Invocation(json.dumps(error).encode(), "Unhandled", cold)
            self._give_back(env)
            return Invocation(out, None, cold)
        if answer.get("killed"):
            env.kill()
        else:
            self._give_back(env)
        return Invocation(json.dumps(answer["error"]).encode(), "Unhandled", cold)

    def _exchange(self, env: _Environment, request: dict[str, Any], deadline: float
                  ) -> dict[str, Any]:  # fmt: skip
        """Send one invocation and watch it: its answer, or the error of its kill."""
        env.send(request)
        answer: list[dict[str, Any] | None] = []
        reader = threading.Thread(target=lambda: answer.append(env.read_answer()), daemon=True)
        reader.start()
        limit = self.memory_mb * 1024 * 1024
        while reader.is_alive():
            reader.join(timeout=0.01)
            if not reader.is_alive():
                break
            if env.peak_rss() > limit:
                env.proc.kill()
                if env.api is not None:
                    env.api.close()  # (no answer will come)
                reader.join()
                return {"killed": True, "error": _aws_error(
                    "Runtime.ExitError", "Runtime exited with error: signal: killed",
                    request["request_id"])}  # fmt: skip
            if time.time() > deadline:
                env.proc.kill()
                if env.api is not None:
                    env.api.close()
                reader.join()
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                return {"killed": True, "error": _aws_error(
                    "Sandbox.Timedout", f"{stamp}Z {request['request_id']} Task timed out "
                    f"after {self.timeout_s:.2f} seconds", request["request_id"])}  # fmt: skip
        got = answer[0] if answer else None
        if got is None:  # the process died by itself
            return {"killed": True, "error": _aws_error(
                "Runtime.ExitError", f"Runtime exited with error: exit status "
                f"{env.proc.wait()}", request["request_id"])}  # fmt: skip
        return got

    # -- environments -------------------------------------------------------------------------
    def _take(self) -> tuple[_Environment, bool]:
        with self._lock:
            if self._closed:
                raise ConfigError("this LocalLambda is closed")
            while self._idle:
                env = self._idle.pop()
                if env.proc.poll() is None:
                    env.thaw()
                    return env, False
                env.close()
        env = _Environment(self.handler, self._env, ric=self.runtime == "awslambdaric")
        with self._lock:
            self.cold_starts += 1
        return env, True

    def _give_back(self, env: _Environment) -> None:
        with self._lock:
            if not self._closed:
                if self.freeze:
                    env.freeze()
                self._idle.append(env)
                return
        env.close()

    @property
    def environments(self) -> int:
        """Idle (warm) environments now."""
        with self._lock:
            return len(self._idle)

    # -- the Invoke API -----------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve AWS's Invoke API on ``host:port``; its endpoint URL (for boto3's
        ``endpoint_url``)."""
        from .invoke_api import InvokeServer

        if self._server is None:
            self._server = InvokeServer(self, host, port)
        return str(self._server.url)

    def close(self) -> None:
        """Stop every environment (and the Invoke API)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        if self._server is not None:
            self._server.close()
        for env in idle:
            env.close()

    def __enter__(self) -> LocalLambda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _aws_error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "requestId": request_id}
