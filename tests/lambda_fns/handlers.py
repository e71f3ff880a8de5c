"""Lambda handlers for the local runtime's tests: each does one thing AWS constrains."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from typing import Any

import pocketlib
import pocketlib.serverless as pls

_calls = 0


def describe(event: Any, context: Any) -> dict[str, Any]:
    """What the environment and the context look like; a global counts warm reuse."""
    global _calls
    _calls += 1
    marker = os.path.join(tempfile.gettempdir(), "seen")
    existed = os.path.exists(marker)
    with open(marker, "w") as f:
        f.write("x")
    return {
        "event": event, "calls": _calls, "pid": os.getpid(), "tmp_kept": existed,
        "tmpdir": tempfile.gettempdir(),
        "remaining": context.get_remaining_time_in_millis(),
        "types": {k: type(getattr(context, k)).__name__ for k in (
            "function_name", "function_version", "invoked_function_arn", "memory_limit_in_mb",
            "aws_request_id", "log_group_name", "log_stream_name")},
        "memory": context.memory_limit_in_mb,
        "in_lambda": pls.in_lambda(),
    }  # fmt: skip


def sleep(event: Any, context: Any) -> str:
    time.sleep(event["seconds"])
    return "woke"


def hog(event: Any, context: Any) -> int:
    blocks = [bytearray(1 << 20) for _ in range(event["mb"])]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touched: resident
    return len(blocks)


def fail(event: Any, context: Any) -> None:
    raise ValueError(f"bad input {event['n']}")


def sized(event: Any, context: Any) -> str:
    return "x" * event["n"]


def queue(event: Any, context: Any) -> str:
    try:
        multiprocessing.Queue()
    except OSError as exc:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    return "no error"


@pls.handler
def pocket(event: Any, context: Any, job: pocketlib.Job) -> Any:
    """A decorated handler: a result of event['mb'] MB comes back by reference."""
    job.put("from-lambda", str(event["n"]).encode())
    return os.urandom(event["mb"] << 20) if event.get("mb") else pls.is_cold_start()


_ticks: list[float] = []


def ticker(event: Any, context: Any) -> int:
    """A background thread counts while the environment runs; frozen, it counts nothing."""
    import threading

    if not _ticks:

        def tick() -> None:
            while True:
                _ticks.append(time.monotonic())
                time.sleep(0.01)

        threading.Thread(target=tick, daemon=True).start()
    time.sleep(event.get("run", 0))
    return len(_ticks)


@pls.handler
def dies_while_writing(event: Any, context: Any, job: pocketlib.Job) -> None:
    """A mapper killed (by its timeout) after writing parts, before publishing them."""
    with pls.ShuffleWriter(job, "killed", mapper=0, reducers=4) as out:
        for r in range(4):
            out.write(r, os.urandom(1 << 20))
        time.sleep(event["seconds"])  # the timeout ends it here
