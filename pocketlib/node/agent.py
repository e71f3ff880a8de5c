"""A managed node's link to its controller: register once, then a heartbeat every second.

The heartbeat carries what the autoscaler and the accounting need: the node's CPU (fraction of
one core used by its process), network bytes/s, bytes stored in total and per job, and requests
per job (cumulative, so a lost heartbeat loses nothing). The answer may ask the node to register
again (the controller restarted) or to delete jobs that were deregistered while the node could
not be reached.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..auth import node_token
from ..config import Address
from ..errors import PocketError
from ..protocol import Op
from ..rpc import JsonChannel

if TYPE_CHECKING:
    from .server import StorageNode

__all__ = ["ControllerLink"]

log = logging.getLogger("pocketlib.node")


class ControllerLink:
    """Registers ``node`` with the controller and keeps it informed from a daemon thread."""

    def __init__(
        self,
        node: StorageNode,
        controller: str | Address,
        *,
        name: str,
        secret: bytes,
        bandwidth: int,
        advertise: Address | None = None,
        interval: float = 1.0,
    ) -> None:
        self.node = node
        self.name = name
        self.bandwidth = bandwidth
        self.advertise = advertise or node.address
        self.interval = interval
        self.channel = JsonChannel(controller)
        self._token = node_token(secret, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pocket-node-heartbeat", daemon=True)
        self._registered = False
        self._last = (time.monotonic(), time.process_time(), 0)
        #: Heartbeats answered (tests and ``pocket status`` look at it).
        self.beats = 0

    def start(self) -> ControllerLink:
        """Register and heartbeat from a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop heartbeating (the controller will find the node dead, unless it drained it)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.channel.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.beat()
                failures = 0
            except PocketError as exc:
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:  # not once a second forever
                    log.warning("controller %s unreachable: %s", self.channel.address, exc)
            self._stop.wait(self.interval)

    def beat(self) -> None:
        """One registration (if needed) and heartbeat, synchronously."""
        if not self._registered:
            self.channel.call(Op.NODE_REGISTER, self._identity(), job=self.name, token=self._token)
            self._registered = True
        reply = self.channel.call(Op.NODE_HEARTBEAT, self.load(), job=self.name, token=self._token)
        self.beats += 1
        if reply.get("register"):  # the controller restarted and does not know us yet
            self._registered = False
        for job in reply.get("delete_jobs", ()):
            self.node.delete_job(str(job))
        for job, version in dict(reply.get("map_versions", {})).items():  # pushes it missed
            self.node.learn_map_version(str(job), int(version))
        # Set before the next heartbeat reports it: the controller stops a drained node only
        # once a heartbeat says it refuses new data and stores nothing.
        self.node.draining = bool(reply.get("drain", False))

    def _identity(self) -> dict[str, Any]:
        tier = self.node.tier
        return {
            "name": self.name,
            "address": str(self.advertise),
            "tier": tier.name,
            "capacity": tier.capacity,
            "bandwidth": self.bandwidth,
        }

    def load(self) -> dict[str, Any]:
        """The figures of one heartbeat."""
        stats = self.node.stats()
        now, cpu_now = time.monotonic(), time.process_time()
        moved = stats["bytes_in"] + stats["bytes_out"]
        then, cpu_then, moved_then = self._last
        self._last = (now, cpu_now, moved)
        # Rates need an interval: the first heartbeat, right after start, reports none (the
        # CPU of a just-started process over a few milliseconds would read as several cores).
        elapsed = now - then if self.beats else float("inf")
        tier = stats["tier"]
        return {
            **self._identity(),
            "cpu": (cpu_now - cpu_then) / elapsed if elapsed > 0 else 0.0,
            "net": max(0, moved - moved_then) / elapsed if elapsed > 0 else 0.0,
            "used": tier["used"],
            "jobs": tier["used_by_job"],
            "requests": stats["job_ops"],
            "draining": stats["draining"],
            "map_versions": stats["map_versions"],
        }
