"""The controller's records of nodes and jobs, the load they add up to on each node, and the
state file that outlives a restart.

The file holds the secret, the jobs, the nodes that were alive, the deregistered job ids and
the usage ledger, as JSON written atomically and readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import JobHints
from ..routing.allocation import Demand, NodeLoad
from ..routing.weightmap import WeightMap
from ..ticket import DEFAULT_STRIPE_SIZE
from .accounting import Ledger

__all__ = ["CLOSED_MEMORY", "JobRecord", "NodeRecord", "SavedState", "encode_state",
           "load_state", "node_loads", "save_state"]  # fmt: skip

#: Deregistered job ids remembered (to tell late nodes to drop their data).
CLOSED_MEMORY = 10_000


@dataclass(slots=True)
class NodeRecord:
    """A registered node."""

    name: str
    address: str
    tier: str
    capacity: int
    bandwidth: int
    state: str = "active"  # active | draining | dead
    last_seen: float = 0.0
    cpu: float = 0.0
    net: float = 0.0
    used: int = 0
    job_bytes: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    #: Launched by the provisioner (so the controller may stop it).
    provisioned: bool = False
    #: Heartbeats in a row reporting that it refuses new data (draining).
    drain_beats: int = 0


@dataclass(slots=True)
class JobRecord:
    """A registered job."""

    id: str
    name: str
    hints: JobHints
    demand: Demand
    maps: list[WeightMap]
    #: Per node name: (throughput, capacity) allocated there.
    alloc: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Per node still starting (provisioner handle): fraction of the job it will take.
    pending: dict[str, float] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    #: Nodes drained and stopped after the job's data on them was gone.
    retired: set[str] = field(default_factory=set)
    stripe_size: int = DEFAULT_STRIPE_SIZE
    created: float = field(default_factory=time.time)
    #: When the ledger last charged the job (monotonic clock).
    charged: float = field(default_factory=time.monotonic)
    #: The newest weight-map version handed out in tickets: its nodes were told it first.
    #: 0 until the first ticket (no handle can be older than a job's first map); a restarted
    #: controller counts every map as handed out.
    published: int = 0

    def add_alloc(self, name: str, more: tuple[int, int]) -> None:
        """Allocate ``more`` (throughput, capacity) on node ``name``, beside what it has."""
        t, c = self.alloc.get(name, (0, 0))
        self.alloc[name] = (t + more[0], c + more[1])


@dataclass(slots=True)
class SavedState:
    """What :func:`load_state` read back."""

    secret: str
    jobs: dict[str, JobRecord]
    nodes: dict[str, NodeRecord]
    closed: list[str]
    ledger: Ledger


def node_loads(
    nodes: Iterable[NodeRecord], jobs: Collection[JobRecord], tier: str, state: str
) -> list[NodeLoad]:
    """The load of each node of ``tier`` in ``state``: what it reported, and what the jobs
    were allocated on it."""
    loads = []
    for node in nodes:
        if node.tier != tier or node.state != state:
            continue
        load = NodeLoad(node.name, tier, node.capacity, node.bandwidth, cpu=node.cpu,
                        net=node.net, used=node.used)  # fmt: skip
        for job in jobs:
            t, c = job.alloc.get(node.name, (0, 0))
            load.alloc_throughput += t
            load.alloc_capacity += c
            if node.name in job.alloc or (job.maps and node.address in job.maps[-1].weights):
                load.jobs += 1
        loads.append(load)
    return loads


def encode_state(
    secret: str,
    jobs: Iterable[JobRecord],
    nodes: Iterable[NodeRecord],
    closed: Iterable[str],
    ledger: Ledger,
) -> dict[str, Any]:
    """The state file's content, as JSON-ready values (call it under the controller's lock,
    so the records do not change while they are copied)."""
    return {
        "secret": secret,
        "jobs": [_job_state(j) for j in jobs],
        "nodes": [
            [n.name, n.address, n.tier, n.capacity, n.bandwidth, n.provisioned]
            for n in nodes
            if n.state != "dead"
        ],
        "closed": list(closed),
        "ledger": ledger.as_dict(),
    }


def save_state(path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` (see :func:`encode_state`) to ``path`` atomically."""
    # A file of its own (mkstemp makes it 0600: it holds the secret), renamed over the old one.
    fd, tmp = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", dir=os.path.dirname(path) or "."
    )
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: str) -> SavedState:
    """The state :func:`save_state` wrote to ``path``."""
    with open(path) as f:
        state = json.load(f)
    secret = state["secret"]
    jobs: dict[str, JobRecord] = {}
    for data in state.get("jobs", []):
        job = _job_from_state(data)
        jobs[job.id] = job
    closed = list(state.get("closed", []))
    ledger = Ledger.from_dict(state.get("ledger", {}))
    # Nodes come back as they were, and as alive as a node that just sent a heartbeat:
    # those that do not send one within dead_after are found dead like any other.
    now = time.monotonic()
    nodes: dict[str, NodeRecord] = {}
    for name, address, tier, capacity, bandwidth, provisioned in state.get("nodes", []):
        nodes[name] = NodeRecord(name, address, tier, capacity, bandwidth, last_seen=now,
                                 provisioned=provisioned)  # fmt: skip
    return SavedState(secret, jobs, nodes, closed, ledger)


def _job_state(job: JobRecord) -> dict[str, Any]:
    d = job.demand
    return {
        "id": job.id, "name": job.name, "hints": job.hints.as_dict(),
        "demand": [d.tier, d.throughput, d.capacity, d.bound, d.nodes],
        "maps": [m.as_dict() for m in job.maps], "alloc": job.alloc,
        "lost": sorted(job.lost), "retired": sorted(job.retired),
        "stripe_size": job.stripe_size, "created": job.created,
    }  # fmt: skip


def _job_from_state(data: Mapping[str, Any]) -> JobRecord:
    tier, throughput, capacity, bound, nodes = data["demand"]
    return JobRecord(
        id=data["id"], name=data["name"], hints=JobHints.from_dict(data["hints"]),
        demand=Demand(tier, throughput, capacity, bound, nodes),
        maps=[WeightMap.from_dict(m) for m in data["maps"]],
        alloc={k: (int(v[0]), int(v[1])) for k, v in data["alloc"].items()},
        lost=set(data.get("lost", ())), retired=set(data.get("retired", ())),
        stripe_size=int(data["stripe_size"]),
        created=float(data["created"]),
        published=int(data["maps"][-1]["version"]) if data["maps"] else 0,
    )  # fmt: skip
