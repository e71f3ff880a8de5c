"""Allocation policy: a job's hints -> a tier and shares of nodes. Pure; no I/O.

Pocket's rules, generalised where Pocket stopped short:

* Missing hints are derived as Pocket derived them: a function moves 600 Mb/s at most, so
  ``max_concurrency`` functions need that many times it; with no throughput hint at all a job
  gets two nodes' worth. A missing capacity follows from the throughput as the capacity of the
  nodes that throughput occupies (uniform access), and a missing throughput from the capacity
  the same way.
* A job is *throughput-bound* when ``throughput / node bandwidth >= capacity / node capacity``
  on its tier, else *capacity-bound* (reported; the packing below takes both into account).
* Tier choice: latency-sensitive jobs go to DRAM; the others to the cheapest tier by
  ``max(throughput / bandwidth, capacity / node capacity) * node price``, among the tiers the
  cluster can run. Pocket only ever chose between DRAM and NVMe, and never by price.
* Online bin-packing, Pocket's "fill the fullest node first": walk the tier's active nodes from
  the most allocated to the least and give each the largest fraction of the job it can hold in
  *both* throughput and capacity; what is left becomes new nodes to start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..config import FUNCTION_THROUGHPUT, JobHints, format_rate, format_size
from ..errors import CapacityError, ConfigError

__all__ = [
    "DEFAULT_TIERS",
    "Demand",
    "NodeLoad",
    "Placement",
    "TierSpec",
    "allocate",
    "choose_tier",
    "demand_for",
    "normalise",
    "pack",
]

#: Fractions below this are rounding, not a share worth routing keys to.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class TierSpec:
    """What a node of a tier offers and costs (a node the provisioner would start)."""

    name: str
    #: Bytes one node holds.
    node_capacity: int
    #: Bytes/s one node serves.
    node_bandwidth: int
    #: What one node costs per hour (USD), for tier choice and cost reports.
    price_per_hour: float
    #: The machine the price is for (documentation only).
    instance: str = ""

    def __post_init__(self) -> None:
        if self.node_capacity <= 0 or self.node_bandwidth <= 0:
            raise ConfigError(f"tier {self.name!r}: node capacity and bandwidth must be positive")
        if not (self.price_per_hour >= 0 and math.isfinite(self.price_per_hour)):
            raise ConfigError(f"tier {self.name!r}: price must be a non-negative number")


_GB = 1000**3
#: The EC2 machines Pocket ran on (us-east-1 on-demand prices), one per tier. Pocket's
#: storage nodes served about 8 Gb/s (1 GB/s) each; an HDD node is held to what its disk
#: streams (about 160 MB/s), not to its network.
DEFAULT_TIERS: Mapping[str, TierSpec] = {
    "dram": TierSpec("dram", 60 * _GB, 1 * _GB, 0.532, "r4.2xlarge"),
    "nvme": TierSpec("nvme", 1900 * _GB, 1 * _GB, 0.624, "i3.2xlarge"),
    "hdd": TierSpec("hdd", 2000 * _GB, 160 * 1000**2, 0.468, "h1.2xlarge"),
}


@dataclass(frozen=True, slots=True)
class Demand:
    """A job's needs on one tier, with the missing hints derived."""

    tier: str
    throughput: int
    capacity: int
    #: "throughput" or "capacity": which one sets the number of nodes.
    bound: str
    #: Nodes' worth of the tier the job needs (fractional).
    nodes: float


def demand_for(
    hints: JobHints, spec: TierSpec, *, function_throughput: int = FUNCTION_THROUGHPUT
) -> Demand:
    """What ``hints`` ask of a node of ``spec``, derived as Pocket derived it."""
    capacity = hints.capacity if isinstance(hints.capacity, int) else None
    throughput = hints.peak_throughput if isinstance(hints.peak_throughput, int) else None
    if throughput is None and hints.max_concurrency is not None:
        throughput = hints.max_concurrency * function_throughput
    if throughput is None:
        if capacity is None:  # no hints at all: two nodes' worth, as Pocket did
            throughput = 2 * spec.node_bandwidth
        else:  # the bandwidth of the nodes holding that capacity
            throughput = math.ceil(capacity / spec.node_capacity * spec.node_bandwidth)
    if capacity is None:
        capacity = math.ceil(throughput / spec.node_bandwidth * spec.node_capacity)
    throughput, capacity = max(throughput, 1), max(capacity, 1)  # never divide by zero
    by_throughput = throughput / spec.node_bandwidth
    by_capacity = capacity / spec.node_capacity
    # Pocket's rule (>=); a throughput derived from the capacity hint leaves the capacity as
    # what sets the job's size.
    derived = hints.capacity is not None and (
        hints.peak_throughput is None and hints.max_concurrency is None
    )
    bound = "capacity" if derived or by_throughput < by_capacity else "throughput"
    return Demand(spec.name, throughput, capacity, bound, max(by_throughput, by_capacity))


def choose_tier(
    hints: JobHints,
    tiers: Mapping[str, TierSpec],
    *,
    function_throughput: int = FUNCTION_THROUGHPUT,
) -> tuple[TierSpec, Demand]:
    """The cheapest tier that serves ``hints`` (DRAM if latency-sensitive) and the demand there.

    ConfigError if no usable tier is configured (e.g. a latency-sensitive job on a cluster
    without DRAM).
    """
    if hints.latency_sensitive:
        if "dram" not in tiers:
            raise ConfigError("a latency-sensitive job needs DRAM, and this cluster has none")
        spec = tiers["dram"]
        return spec, demand_for(hints, spec, function_throughput=function_throughput)
    if not tiers:
        raise ConfigError("this cluster has no tier to place jobs on")
    best: tuple[float, str, TierSpec, Demand] | None = None
    for name, spec in tiers.items():
        demand = demand_for(hints, spec, function_throughput=function_throughput)
        cost = demand.nodes * spec.price_per_hour
        if best is None or (cost, name) < best[:2]:
            best = (cost, name, spec, demand)
    assert best is not None
    return best[2], best[3]


@dataclass(slots=True)
class NodeLoad:
    """The controller's view of one node, as the policies need it."""

    name: str
    tier: str
    capacity: int
    bandwidth: int
    #: Sums of what jobs were allocated here.
    alloc_capacity: int = 0
    alloc_throughput: int = 0
    #: Measured: fraction of one core, bytes/s moved, bytes stored.
    cpu: float = 0.0
    net: float = 0.0
    used: int = 0
    #: Jobs with weight on this node.
    jobs: int = 0

    @property
    def fullness(self) -> float:
        """The larger of its allocated fractions of throughput and capacity."""
        return max(self.alloc_throughput / self.bandwidth, self.alloc_capacity / self.capacity)

    def free_fraction(self, demand: Demand) -> float:
        """The largest fraction of ``demand`` this node can still take in both resources."""
        room_t = (self.bandwidth - self.alloc_throughput) / demand.throughput
        room_c = (self.capacity - self.alloc_capacity) / demand.capacity
        return max(0.0, min(room_t, room_c))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a job goes: shares of running nodes plus nodes still to start."""

    demand: Demand
    #: Fraction of the job per running node (sums to ``placed``).
    shares: dict[str, float] = field(default_factory=dict)
    #: Fraction of the job for each node to start (one entry per node).
    new_nodes: list[float] = field(default_factory=list)

    @property
    def placed(self) -> float:
        """Fraction of the job on running nodes."""
        return sum(self.shares.values())

    def describe(self) -> str:
        """One line for the controller's log."""
        d = self.demand
        return (
            f"{d.tier}: {format_rate(d.throughput)}, {format_size(d.capacity)} "
            f"({d.bound}-bound, {d.nodes:.2f} nodes' worth) -> "
            f"{len(self.shares)} running node(s) for {self.placed:.0%}, "
            f"{len(self.new_nodes)} to start"
        )


def pack(
    demand: Demand,
    nodes: Iterable[NodeLoad],
    spec: TierSpec,
    *,
    max_new_nodes: int | None = None,
) -> Placement:
    """Place ``demand`` on ``nodes`` (active nodes of its tier), fullest first.

    ``max_new_nodes`` bounds how many nodes may be started for the rest; CapacityError when
    even that cannot hold the job, so an impossible job is refused at registration instead of
    failing its puts later.
    """
    shares: dict[str, float] = {}
    remaining = 1.0
    for node in sorted(nodes, key=lambda n: (-n.fullness, n.name)):
        take = min(remaining, node.free_fraction(demand))
        if take > _EPSILON:
            shares[node.name] = take
            remaining -= take
        if remaining <= _EPSILON:
            break
    new_nodes: list[float] = []
    if remaining > _EPSILON:
        # A fresh node takes this fraction of the job: whichever resource it runs out of first.
        per_node = min(
            spec.node_bandwidth / demand.throughput, spec.node_capacity / demand.capacity
        )
        count = math.ceil(remaining / per_node - _EPSILON)
        if max_new_nodes is not None and count > max_new_nodes:
            raise CapacityError(
                f"the job needs {format_rate(demand.throughput)} and "
                f"{format_size(demand.capacity)} on {demand.tier}: {count} more node(s), "
                f"and the cluster may start only {max_new_nodes} more"
            )
        new_nodes = [per_node] * (count - 1) + [remaining - per_node * (count - 1)]
    return Placement(demand, shares, new_nodes)


def allocate(node: NodeLoad, demand: Demand, fraction: float) -> tuple[int, int]:
    """Charge ``fraction`` of ``demand`` to ``node``; returns (throughput, capacity) charged."""
    throughput = math.ceil(demand.throughput * fraction)
    capacity = math.ceil(demand.capacity * fraction)
    node.alloc_throughput += throughput
    node.alloc_capacity += capacity
    return throughput, capacity


def normalise(shares: Mapping[str, float]) -> dict[str, float]:
    """Shares scaled to sum to 1 (a weight map)."""
    total = sum(shares.values())
    return {name: share / total for name, share in shares.items()}
