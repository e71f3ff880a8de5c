"""The controller: nodes, jobs, allocation, heartbeats and the autoscaling loop.

It turns a job's hints into an allocation on the cheapest tier that serves it (see
:mod:`pocketlib.routing.allocation`), hands the job a :class:`~pocketlib.ticket.Ticket`, and
keeps the fleet inside its utilization band (:mod:`pocketlib.routing.autoscale`). It never
touches data: clients route keys themselves, and the controller talks to nodes only to tell
them a job's newest weight-map version before any ticket carries it (so that nodes fence
handles with older tickets) and to free a deregistered job's data.
:mod:`pocketlib.control.server` serves it over TCP; its records and state file are in
:mod:`pocketlib.control.state`.

This module holds the controller's state, its status and its state file; its policies are
layered below it: :mod:`pocketlib.control.placement` (where a job's share goes),
:mod:`pocketlib.control.jobs` (jobs, tickets, weight maps handed out) and
:mod:`pocketlib.control.fleet` (nodes, heartbeats, the loop).

Concurrency: one lock over the state; nothing slow (network calls, process starts) runs under
it, so registering a job never waits for a node to start unless no running node can take any
of the job (then only that registration waits, bounded by ``start_timeout``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..client.client import Client
from ..config import FUNCTION_THROUGHPUT
from ..routing.allocation import DEFAULT_TIERS, TierSpec
from ..routing.autoscale import Band, Decision
from ..ticket import DEFAULT_STRIPE_SIZE
from .accounting import Ledger
from .fleet import Fleet
from .provisioners import Provisioner
from .state import (
    CLOSED_MEMORY,
    JobRecord,
    NodeRecord,
    encode_state,
    load_state,
    save_state,
)
from .status import snapshot

__all__ = ["Controller", "JobRecord", "NodeRecord"]

log = logging.getLogger("pocketlib.controller")


class Controller(Fleet):
    """The control plane's state and policies; thread-safe.

    ``tiers`` are the node kinds the provisioner can start (and their prices); nodes of other
    tiers that register by themselves are used too, priced from :data:`DEFAULT_TIERS`.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        provisioner: Provisioner | None = None,
        tiers: Mapping[str, TierSpec] | None = None,
        band: Band | None = None,
        min_nodes: Mapping[str, int] | None = None,
        max_nodes: int = 64,
        dead_after: float = 3.0,
        start_timeout: float = 30.0,
        scale_down_delay: float = 10.0,
        scale_up_delay: float = 2.0,
        function_throughput: int = FUNCTION_THROUGHPUT,
        stripe_size: int = DEFAULT_STRIPE_SIZE,
        state_path: str | None = None,
        autoscale: bool = True,
    ) -> None:
        self.secret = secret or secrets.token_hex(32)
        self.provisioner = provisioner
        self.tiers: dict[str, TierSpec] = dict(tiers if tiers is not None else DEFAULT_TIERS)
        self.band = band or Band()
        self.min_nodes = dict(min_nodes or {})
        self.max_nodes = max_nodes
        self.dead_after = dead_after
        self.start_timeout = start_timeout
        #: Seconds a tier must stay below the band before a node is drained.
        self.scale_down_delay = scale_down_delay
        #: Seconds a tier must stay above the band before a node is added.
        self.scale_up_delay = scale_up_delay
        #: (action, tier) -> since when the autoscaler has wanted it.
        self._since: dict[tuple[str, str], float] = {}
        self.function_throughput = function_throughput
        self.stripe_size = stripe_size
        self.state_path = state_path
        self.autoscale = autoscale
        #: The address clients reach the controller at (set by the server).
        self.address: str | None = None
        self.nodes: dict[str, NodeRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.closed: deque[str] = deque(maxlen=CLOSED_MEMORY)
        self._closed_set: set[str] = set()
        #: Provisioner handles still starting -> (tier, when started).
        self.starting: dict[str, tuple[str, float]] = {}
        #: Handles the autoscaler started because a tier ran hot.
        self._scale_ups: set[str] = set()
        self.ledger = Ledger()
        #: Autoscaling decisions, newest last.
        self.decisions: deque[tuple[float, Decision]] = deque(maxlen=1000)
        #: One sample per tick: what the fleet had, allocated and used (for plots).
        self.timeline: deque[dict[str, Any]] = deque(maxlen=24 * 3600)
        self.lock = threading.RLock()
        self._joined = threading.Condition(self.lock)
        self._last_tick: float | None = None
        self._nodes_client: Client | None = None
        self._publish_client: Client | None = None
        self._save_lock = threading.Lock()
        self._secret = self.secret.encode()
        if state_path and os.path.exists(state_path):
            self._load(state_path)

    # -- status and state ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Nodes, jobs, recent decisions, usage and cost (``pocket status``)."""
        with self.lock:
            loads = {ld.name: ld for t in {n.tier for n in self.nodes.values()}
                     for s in ("active", "draining") for ld in self._loads(t, s)}  # fmt: skip
            view = snapshot(self.nodes.values(), self.jobs.values(), loads, self.decisions,
                            self.starting)  # fmt: skip
        return {
            "address": self.address, **view, "usage": self.ledger.report(self._all_specs()),
            "band": [self.band.low, self.band.high],
        }  # fmt: skip

    def _save(self) -> None:
        """Write jobs, the secret and usage to the state file (atomically), if there is one."""
        if not self.state_path:
            return
        # One save at a time, each of the state as it is when its turn comes: a slower
        # writer can never put an older snapshot over a newer one.
        with self._save_lock:
            with self.lock:
                state = encode_state(self.secret, self.jobs.values(), self.nodes.values(),
                                     self.closed, self.ledger)  # fmt: skip
            save_state(self.state_path, state)

    def _load(self, path: str) -> None:
        saved = load_state(path)
        self.secret, self._secret = saved.secret, saved.secret.encode()
        self.jobs.update(saved.jobs)
        self.closed.extend(saved.closed)
        self._closed_set = set(self.closed)
        self.ledger = saved.ledger
        self.nodes.update(saved.nodes)
        log.info("state loaded from %s: %d job(s)", path, len(self.jobs))
