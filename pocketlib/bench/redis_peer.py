"""A real redis-server for ``pocket bench``, and the sort's shuffle store on top of it.

:class:`RedisServer` starts ``redis-server`` on 127.0.0.1 with persistence off, waits until it
answers PING and stops it by the PID it started (SIGTERM, then SIGKILL if it lingers).
redis-server cannot bind port 0 and report the port it got, so a free port is found by binding
a socket to port 0 and closing it; if another process takes the port in between, the start is
retried on a new one.

:class:`RedisShuffle` runs :func:`pocketlib.workloads.sort.run_sort` with Redis as the
shuffle store: put = SET, take = GETDEL (one round trip, as pocketlib's delete-after-read),
peak bytes = ``INFO memory`` ``used_memory_peak``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from pocketlib.workloads.sort import ShuffleStore

from ..control.processes import terminate

__all__ = ["RedisServer", "RedisShuffle", "free_port", "redis_version"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_version(binary: str = "redis-server") -> str:
    """``redis-server --version``, or a note that it is missing."""
    path = shutil.which(binary)
    if path is None:
        return f"{binary}: not found"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM the server if this process dies without stopping it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


class RedisServer:
    """A redis-server child process on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        *,
        binary: str = "redis-server",
        host: str = HOST,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 10.0,
        attempts: int = 5,
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(f"{binary} is not on PATH (apt-get install -y redis-server)")
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="pocket-bench-redis-")
        errors: list[str] = []
        try:
            for _ in range(attempts):
                port = free_port(host)
                log = os.path.join(self._dir, f"redis-{port}.log")
                args = [
                    path, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no",
                    "--protected-mode", "no", "--dir", self._dir, "--logfile", log,
                    "--daemonize", "no", *extra_args,
                ]  # fmt: skip
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                )  # fmt: skip
                if self._wait_ready(proc, port, start_timeout):
                    self.proc, self.port = proc, port
                    return
                terminate(proc)
                errors.append(_tail(log))
            raise RuntimeError(
                f"redis-server failed to start after {attempts} attempts: {errors[-1]!r}"
            )
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # exited: most likely the port was taken meanwhile
            if _ping(self.host, port):
                return True
            time.sleep(0.02)
        return False

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client (with the hiredis parser when hiredis is installed)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the server and wait; SIGKILL if it does not stop in time."""
        code = None
        if self.proc is not None:
            code = terminate(self.proc, timeout)
        shutil.rmtree(self._dir, ignore_errors=True)
        return code

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __str__(self) -> str:
        return self.address


def _tail(path: str, n: int = 400) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return f.read()[-n:].strip()
    return "no log"


class RedisShuffle(ShuffleStore):
    """The sort's shuffle through one redis-server (redis-py with hiredis)."""

    name = "redis"

    def __init__(self, host: str, port: int, prefix: str = "sort") -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the address, never the parent's socket: each connects on first use.
        return {"host": self.host, "port": self.port, "prefix": self.prefix, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis(host=self.host, port=self.port, socket_timeout=120)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.client.set(self._key(key), data)

    def take(self, key: str) -> bytes:
        data: bytes | None = self.client.getdel(self._key(key))
        if data is None:
            raise KeyError(key)
        return data

    def peak_bytes(self) -> int | None:
        return int(self.client.info("memory")["used_memory_peak"])

    def cleanup(self) -> None:
        if self._client is not None:
            keys = list(self._client.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                self._client.delete(*keys)
            self._client.close()
            self._client = None
