"""Embedded storage: a controller and its nodes on this machine.

:class:`LocalCluster` is a controller (in this process) whose provisioner starts nodes as
child processes (:class:`~pocketlib.control.processes.NodeProcess`): what ``pocket up``, the
main job, the tests and the examples run on. It composes the controller, its server and a
provisioner, and no other module of the control plane imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import parse_size, parse_throughput
from ..errors import ConfigError, PocketTimeoutError

if TYPE_CHECKING:
    from ..client.client import Client
    from ..routing.autoscale import Band
    from .controller import Controller
    from .provisioners import LocalProvisioner
    from .server import ControlServer

__all__ = ["LocalCluster"]


class LocalCluster:
    """A controller and storage nodes on this machine; use as a context manager.

    With no arguments: two DRAM nodes of 256 MiB at 1 GB/s each, autoscaling between two and
    sixteen nodes. ``tiers`` maps each tier the cluster may run to how many nodes it starts
    with (also its minimum); ``node_capacity`` and ``node_bandwidth`` size every node (a
    mapping sets them per tier).

    >>> with pocketlib.LocalCluster() as cluster:                         # doctest: +SKIP
    ...     job = pocketlib.Client(cluster.address).register_job("sort", JobHints(capacity="1GB"))
    """

    def __init__(
        self,
        tiers: Mapping[str, int] | None = None,
        *,
        node_capacity: int | str | Mapping[str, int | str] = "256MiB",
        node_bandwidth: int | str | Mapping[str, int | str] = "1GB/s",
        max_nodes: int = 16,
        band: Band | None = None,
        autoscale: bool = True,
        tick: float = 1.0,
        dead_after: float = 3.0,
        scale_down_delay: float = 10.0,
        scale_up_delay: float = 2.0,
        secret: str | None = None,
        state_path: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 30.0,
    ) -> None:
        # Imported here, not above, so that ``import pocketlib`` stays light.
        from ..routing.allocation import DEFAULT_TIERS, TierSpec
        from .controller import Controller
        from .provisioners import LocalProvisioner
        from .server import ControlServer

        counts = dict(tiers if tiers is not None else {"dram": 2})
        specs = {}
        for tier in counts:
            base = DEFAULT_TIERS.get(tier)
            capacity = parse_size(_per_tier(node_capacity, tier))
            bandwidth = parse_throughput(_per_tier(node_bandwidth, tier))
            price = base.price_per_hour if base else 0.0
            specs[tier] = TierSpec(tier, capacity, bandwidth, price, base.instance if base else "")
        # A node is found dead after missing about three heartbeats.
        heartbeat = min(1.0, dead_after / 3)
        self.provisioner: LocalProvisioner = LocalProvisioner(
            host, extra_args=("--heartbeat", f"{heartbeat:g}")
        )
        self.controller: Controller = Controller(
            secret=secret, provisioner=self.provisioner, tiers=specs, band=band,
            min_nodes=counts, max_nodes=max_nodes, dead_after=dead_after,
            start_timeout=start_timeout, state_path=state_path, autoscale=autoscale,
            scale_down_delay=scale_down_delay, scale_up_delay=scale_up_delay,
        )  # fmt: skip
        self.server: ControlServer = ControlServer(self.controller, host, port, tick=tick)
        self.address = str(self.server.address)
        self.start_timeout = start_timeout
        self._initial = sum(counts.values())
        try:
            self.server.start()
            with self.controller.lock:
                for tier, n in counts.items():
                    for _ in range(n):
                        self.controller._start_node(specs[tier])
            self.wait_for_nodes(self._initial)
        except BaseException:
            self.stop()
            raise

    def wait_for_nodes(self, count: int, timeout: float | None = None) -> None:
        """Block until ``count`` nodes are registered and alive."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.start_timeout)
        while self.alive_nodes() < count:
            if time.monotonic() > deadline:
                raise PocketTimeoutError(
                    f"{self.alive_nodes()} of {count} storage node(s) registered in time"
                )
            time.sleep(0.02)

    def alive_nodes(self) -> int:
        """Registered nodes not found dead."""
        with self.controller.lock:
            return sum(1 for n in self.controller.nodes.values() if n.state != "dead")

    def client(self) -> Client:
        """A client of this cluster's controller."""
        from ..client.client import Client

        return Client(self.address)

    def stop(self) -> None:
        """Stop the controller and every node it started (by their PIDs). Idempotent."""
        self.server.stop()
        self.provisioner.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalCluster {self.address}: {self.alive_nodes()} node(s)>"


def _per_tier(value: Any, tier: str) -> Any:
    if isinstance(value, Mapping):
        if tier not in value:
            raise ConfigError(f"no node size given for tier {tier!r}")
        return value[tier]
    return value
