"""Autoscaling policy: per-tier utilization -> add, drain and stop decisions. Pure; no I/O.

Every tick (a second) the controller hands over its view of the fleet. For each tier and each
resource (CPU, network, capacity) the utilization of the tier's active nodes must stay inside a
band (default 60-80%):

* above the top in any resource: start one node of that tier (unless one is already starting,
  or the fleet is at its maximum);
* below the bottom in every resource: drain one node, the one with the fewest jobs and bytes,
  if the others would stay under the top without it. A draining node gets no new allocations;
  its data is never migrated;
* a draining node that no job has weight on and that stores nothing is stopped;
* a tier below its minimum gets a node whatever its load.

One add or drain per tier per tick, as Pocket's controller did, so the fleet never swings on one
noisy sample. Pocket defined the band but only its scale-down half ever ran; here both halves
do, and every decision carries the figures that caused it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .allocation import NodeLoad

__all__ = ["Band", "Decision", "decide", "utilization"]

RESOURCES = ("cpu", "net", "capacity")


@dataclass(frozen=True, slots=True)
class Band:
    """The utilization band the autoscaler keeps each resource in."""

    low: float = 0.6
    high: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ConfigError(f"a band needs 0 <= low < high <= 1, not {self.low}-{self.high}")


@dataclass(frozen=True, slots=True)
class Decision:
    """One autoscaling action and why."""

    action: str  # "add", "drain" or "stop"
    tier: str
    #: The node drained or stopped (None for "add").
    node: str | None
    reason: str
    figures: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        target = f" {self.node}" if self.node else ""
        return f"{self.action} {self.tier}{target}: {self.reason}"


def utilization(nodes: Sequence[NodeLoad], *, without: NodeLoad | None = None) -> dict[str, float]:
    """Each resource's utilization over ``nodes`` (0..1+), optionally as if ``without`` left.

    CPU is the mean over nodes of the fraction of one core used (a node's process is its
    budget); network and capacity are totals over total bandwidth and capacity. With
    ``without``, its load is spread over the others: what they would carry once it is gone.
    """
    rest = [n for n in nodes if n is not without]
    if not rest:
        return dict.fromkeys(RESOURCES, float("inf"))
    cpu = sum(min(n.cpu, 1.0) for n in nodes) / len(rest)
    net = sum(n.net for n in nodes) / sum(n.bandwidth for n in rest)
    capacity = sum(n.used for n in nodes) / sum(n.capacity for n in rest)
    return {"cpu": cpu, "net": net, "capacity": capacity}


def decide(
    active: Mapping[str, Sequence[NodeLoad]],
    draining: Mapping[str, Sequence[NodeLoad]],
    starting: Mapping[str, int],
    *,
    band: Band,
    min_nodes: Mapping[str, int],
    max_nodes: int,
) -> list[Decision]:
    """This tick's decisions for every tier named in any of the mappings."""
    decisions: list[Decision] = []
    total = sum(map(len, active.values())) + sum(map(len, draining.values()))
    total += sum(starting.values())
    for tier in sorted({*active, *draining, *starting, *min_nodes}):
        nodes = list(active.get(tier, ()))
        pending = starting.get(tier, 0)
        for node in draining.get(tier, ()):
            if node.jobs == 0 and node.used == 0:
                why = "drained: no job has weight on it and it stores nothing"
                decisions.append(Decision("stop", tier, node.name, why))
        floor = min_nodes.get(tier, 0)
        if len(nodes) + pending < floor:
            if total < max_nodes:
                decisions.append(
                    Decision("add", tier, None, f"{len(nodes) + pending} node(s), minimum {floor}")
                )
                total += 1
            continue
        if not nodes:
            continue
        use = utilization(nodes)
        hot = {r: v for r, v in use.items() if v > band.high}
        if hot:
            if pending == 0 and total < max_nodes:
                worst = max(hot, key=hot.__getitem__)
                why = f"{worst} at {hot[worst]:.0%} > {band.high:.0%}"
                decisions.append(Decision("add", tier, None, why, use))
                total += 1
            continue
        if pending or len(nodes) <= floor or any(v >= band.low for v in use.values()):
            continue
        candidate = min(nodes, key=lambda n: (n.jobs, n.used, n.alloc_throughput, n.name))
        after = utilization(nodes, without=candidate)
        if all(v < band.high for v in after.values()):
            busiest = max(use, key=use.__getitem__)
            why = (
                f"every resource under {band.low:.0%} ({busiest} {use[busiest]:.0%}); "
                f"without it: {max(after.values()):.0%} at most"
            )
            figures = {**use, **{f"after_{k}": v for k, v in after.items()}}
            decisions.append(Decision("drain", tier, candidate.name, why, figures))
    return decisions
