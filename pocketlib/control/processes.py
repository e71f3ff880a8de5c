"""Storage nodes as child processes: start ``pocket node``, read its address, stop it by PID.

:class:`NodeProcess` starts ``pocket node`` in a subprocess, reads the address it prints, and
stops it by its PID (SIGTERM, then SIGKILL if it lingers); :func:`terminate` is that stop for
any child process. What :class:`~pocketlib.control.provisioners.LocalProvisioner` starts nodes
with, and what tests and benchmarks run single nodes on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import Address, parse_size
from ..errors import ConfigError

__all__ = ["NodeProcess", "terminate"]


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Stop a child process by its PID: SIGTERM, then SIGKILL if it lingers; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class NodeProcess:
    """A storage node in a child process; use as a context manager."""

    def __init__(
        self,
        tier: str = "dram",
        capacity: int | str = "1GiB",
        *,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.tier = tier
        self.capacity = parse_size(capacity)
        args = [
            sys.executable, "-m", "pocketlib.cli", "node", "--tier", tier,
            "--capacity", str(self.capacity), "--host", host, "--port", "0", *extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.wait(timeout=start_timeout)
            raise ConfigError(f"storage node failed to start: {err.strip() or 'no output'}")
        self.address = Address.parse(line)

    @property
    def pid(self) -> int:
        """The node's process id."""
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the node and wait; SIGKILL if it does not stop in time. Returns its exit code."""
        terminate(self.proc, timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self._remove_leftovers()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the node (a crash, as tests need)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        # A node that was killed cannot unlink its shared-memory arena; its parent does, or
        # the memory stays allocated until reboot. Only files named after this exited PID.
        for path in glob.glob(f"/dev/shm/pocket-{self.proc.pid}-*"):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __str__(self) -> str:
        return str(self.address)
