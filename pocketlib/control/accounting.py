"""Accounting: what each job used, per tier, and what it cost.

The controller charges every job once per tick, per tier:

* ``capacity_s``: bytes allocated x seconds (what the job reserved);
* ``used_capacity_s``: bytes stored x seconds (what it actually held, from heartbeats);
* ``throughput_s``: bytes/s allocated x seconds;
* ``requests``: requests its functions made (per-job counters in heartbeats).

A job's cost is its share of node-seconds priced from the tier table: on each tier, the larger of
its allocated fraction of a node's throughput and of its capacity, times the node's price. That
is what Pocket's rightsizing promises: a job pays for the slice it was given, not the peak fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..routing.allocation import TierSpec

__all__ = ["Ledger", "Usage"]


@dataclass(slots=True)
class Usage:
    """One job's consumption on one tier."""

    capacity_s: float = 0.0
    used_capacity_s: float = 0.0
    throughput_s: float = 0.0
    requests: int = 0
    seconds: float = 0.0

    def node_seconds(self, spec: TierSpec) -> float:
        """The node-seconds this usage amounts to: the larger of its two resource shares."""
        return max(self.throughput_s / spec.node_bandwidth, self.capacity_s / spec.node_capacity)

    def cost(self, spec: TierSpec) -> float:
        """USD, at the tier's node price."""
        return self.node_seconds(spec) * spec.price_per_hour / 3600.0


class Ledger:
    """Per-job, per-tier usage and the fleet's node-seconds; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, dict[str, Usage]] = {}
        #: Node-seconds the fleet ran, per tier (active and draining nodes).
        self.fleet: dict[str, float] = {}

    def charge(
        self, job: str, tier: str, seconds: float, capacity: int, throughput: int, used: int
    ) -> None:
        """``seconds`` of a job holding ``capacity`` and ``throughput`` and storing ``used``."""
        with self._lock:
            u = self.jobs.setdefault(job, {}).setdefault(tier, Usage())
            u.capacity_s += capacity * seconds
            u.throughput_s += throughput * seconds
            u.used_capacity_s += used * seconds
            u.seconds += seconds

    def count_requests(self, job: str, tier: str, n: int) -> None:
        """``n`` more requests of ``job`` served on ``tier``."""
        if n > 0:
            with self._lock:
                self.jobs.setdefault(job, {}).setdefault(tier, Usage()).requests += n

    def run_fleet(self, nodes_per_tier: Mapping[str, int], seconds: float) -> None:
        """The fleet ran ``nodes_per_tier`` for ``seconds``."""
        with self._lock:
            for tier, n in nodes_per_tier.items():
                self.fleet[tier] = self.fleet.get(tier, 0.0) + n * seconds

    def usage_of(self, job: str, tiers: Mapping[str, TierSpec]) -> dict[str, Any]:
        """One job's usage and cost per tier, JSON-ready (what deregistration returns)."""
        with self._lock:
            return {tier: _priced(u, tiers.get(tier)) for tier, u in self.jobs.get(job, {}).items()}

    def report(self, tiers: Mapping[str, TierSpec]) -> dict[str, Any]:
        """Usage and cost per job and for the fleet, JSON-ready."""
        with self._lock:
            jobs = {
                job: {tier: _priced(u, tiers.get(tier)) for tier, u in per_tier.items()}
                for job, per_tier in self.jobs.items()
            }
            fleet = {
                tier: {
                    "node_seconds": s,
                    "cost": s * tiers[tier].price_per_hour / 3600.0 if tier in tiers else None,
                }
                for tier, s in self.fleet.items()
            }
        return {"jobs": jobs, "fleet": fleet}

    def as_dict(self) -> dict[str, Any]:
        """State for the controller's state file."""
        with self._lock:
            return {
                "jobs": {j: {t: asdict(u) for t, u in per.items()} for j, per in self.jobs.items()},
                "fleet": dict(self.fleet),
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        """Inverse of :meth:`as_dict`."""
        ledger = cls()
        for job, per in data.get("jobs", {}).items():
            ledger.jobs[job] = {tier: Usage(**u) for tier, u in per.items()}
        ledger.fleet = {t: float(s) for t, s in data.get("fleet", {}).items()}
        return ledger


def _priced(u: Usage, spec: TierSpec | None) -> dict[str, Any]:
    # Written out rather than dataclasses.asdict, which deep-copies: status and deregistration
    # call this for every job.
    return {
        "capacity_s": u.capacity_s, "used_capacity_s": u.used_capacity_s,
        "throughput_s": u.throughput_s, "requests": u.requests, "seconds": u.seconds,
        "cost": u.cost(spec) if spec is not None else None,
    }  # fmt: skip
