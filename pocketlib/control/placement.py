"""Placement: where the controller puts a job's share, and the weight maps that follow.

The policies are pure (:mod:`pocketlib.routing.allocation`); this is the controller's side that
applies them to its records: placing a registered job (on one tier, or spanning tiers), a node
started for a job joining it, a hot job growing onto an added node, jobs shrinking off a node
being drained or lost, and a new weight-map version whenever a job's nodes change. Every method
runs under the controller's lock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from ..config import JobHints
from ..errors import CapacityError
from ..protocol import MAX_MAP_VERSION
from ..routing.allocation import (
    DEFAULT_TIERS,
    Demand,
    NodeLoad,
    Placement,
    TierSpec,
    demand_for,
    normalise,
    pack,
)
from ..routing.autoscale import Band
from ..routing.weightmap import WeightMap
from .provisioners import Provisioner
from .state import JobRecord, NodeRecord, node_loads

__all__ = ["Placing", "charge_share"]

log = logging.getLogger("pocketlib.controller")


class Placing:
    """The controller's placement (a mixin: :class:`~pocketlib.control.controller.Controller` holds
    the state below and starts nodes)."""

    nodes: dict[str, NodeRecord]
    jobs: dict[str, JobRecord]
    tiers: dict[str, TierSpec]
    provisioner: Provisioner | None
    max_nodes: int
    function_throughput: int
    band: Band
    starting: dict[str, tuple[str, float]]
    _since: dict[tuple[str, str], float]

    def _start_node(self, spec: TierSpec) -> str:
        raise NotImplementedError  # the controller's: it knows its address and secret

    def _place_spanning(
        self, hints: JobHints, demand: Demand, spec: TierSpec, catalog: Mapping[str, TierSpec]
    ) -> list[tuple[TierSpec, Placement, float]]:
        """The job's placement: on its tier, or, if that tier cannot hold it (the fleet's
        limit, or no provisioner for it) and the job is not latency-sensitive, spread over the
        next cheapest tiers too. Each part: (tier, placement of that part, its fraction)."""
        try:
            return [(spec, self._place(demand, spec, partial=not hints.latency_sensitive), 1.0)]
        except _Partial as short:
            parts = [(spec, short.placement, 1.0)] if _held(short.placement) else []
            left = 1.0 - _held(short.placement)
        others = sorted(
            (demand_for(hints, s, function_throughput=self.function_throughput).nodes
             * s.price_per_hour, name) for name, s in catalog.items() if name != spec.name
        )  # fmt: skip
        for _, name in others:
            other = catalog[name]
            part = Demand(name, math.ceil(demand.throughput * left),
                          math.ceil(demand.capacity * left), demand.bound, 0.0)  # fmt: skip
            planned = sum(len(p.new_nodes) for _, p, _ in parts)
            try:
                placement = self._place(part, other, partial=True, planned=planned)
                parts.append((other, placement, left))
                left = 0.0
                break
            except _Partial as short:
                if _held(short.placement):
                    parts.append((other, short.placement, left))
                    left *= 1.0 - _held(short.placement)
        if left > 1e-6 and parts and self.provisioner is None:
            # As on one tier: with nothing to start, the job's nodes carry the rest over
            # their allocation rather than refusing a job that fits in what runs.
            log.warning(
                "job overcommits its nodes: %.0f%% of it has no room of its own", left * 100
            )
            return parts
        if left > 1e-6:
            raise CapacityError(
                f"the cluster cannot hold the job on any tier: {left:.0%} of it finds no room "
                f"(max_nodes={self.max_nodes})"
            )
        return parts

    def _place(
        self, demand: Demand, spec: TierSpec, *, partial: bool = False, planned: int = 0
    ) -> Placement:
        """``planned``: nodes other parts of the same job will start (they count as fleet)."""
        active = self._loads(demand.tier, "active")
        room = self.max_nodes - self._fleet_size() - planned
        # (Draining nodes are not taken back: they refuse new data until their next heartbeat.)
        placement = pack(demand, active, spec, max_new_nodes=None)
        can_start = self.provisioner is not None and demand.tier in self.tiers
        if placement.new_nodes and not can_start:
            if partial:
                raise _Partial(Placement(demand, placement.shares, []))
            if not placement.shares:
                raise CapacityError(
                    f"no {demand.tier} node can hold the job and none can be started for it"
                )
            log.warning("job overcommits its nodes: no node can be started for the rest")
            return Placement(demand, placement.shares, [])
        if len(placement.new_nodes) > room:
            if partial:
                kept = placement.new_nodes[: max(room, 0)]
                raise _Partial(Placement(demand, placement.shares, kept))
            raise CapacityError(
                f"the job needs {len(placement.new_nodes)} more {demand.tier} node(s); the "
                f"fleet may grow by {room} (max_nodes={self.max_nodes})"
            )
        return placement

    def _join_job(self, job: JobRecord, node: NodeRecord, fraction: float) -> None:
        """A node started for ``job`` registered: give it its share (a new map version)."""
        job.alloc[node.name] = charge_share(job.demand, fraction)
        self._new_map(job)

    def _grow_hot_jobs(self, node: NodeRecord) -> None:
        """A node the autoscaler added to a hot tier joins the jobs on its hot nodes.

        Data never moves; a new weight-map version sends a share of those jobs' new keys to
        the new node, which is how added capacity relieves a job that is filling its nodes
        or saturating their network.
        """
        high = self.band.high
        hot = {
            n.name for n in self.nodes.values()
            if n.tier == node.tier and n.state == "active" and n is not node
            and max(n.used / n.capacity, n.net / n.bandwidth, min(n.cpu, 1.0)) > high
        }  # fmt: skip
        jobs = [j for j in self.jobs.values() if hot & set(j.alloc)]
        for job in jobs:
            t = sum(a[0] for a in job.alloc.values()) // len(job.alloc)
            c = sum(a[1] for a in job.alloc.values()) // len(job.alloc)
            job.alloc[node.name] = (t, c)  # the job's average node share, on the new node
            self._new_map(job)
            log.info("job %s grows onto %s (hot: %s)", job.id, node.name, ", ".join(sorted(hot)))

    def _new_map(self, job: JobRecord) -> None:
        self._since.pop(("drain", job.demand.tier), None)  # the tier's load is about to change
        shares = {
            self.nodes[n].address: t / job.demand.throughput + c / job.demand.capacity
            for n, (t, c) in job.alloc.items()
            if n in self.nodes and self.nodes[n].state != "dead"
        }
        if not shares:
            return
        weights = normalise(shares)
        if job.maps and dict(job.maps[-1].weights) == weights:
            return
        if len(job.maps) >= MAX_MAP_VERSION:  # requests carry 16 bits of it
            log.error("job %s has %d weight maps, the most there can be: kept as it is",
                      job.id, len(job.maps))  # fmt: skip
            return
        job.maps.append(WeightMap(len(job.maps) + 1, weights))

    def _replace(self, dead: NodeRecord) -> None:
        """Jobs with weight on a dead node: a map without it, and capacity in its place."""
        for job in self.jobs.values():
            if any(dead.address in m.weights for m in job.maps):  # (draining ones too)
                job.lost.add(dead.address)
            lost = job.alloc.pop(dead.name, None)
            if lost is not None:
                self._move(job, lost, dead.tier, start=True)

    def _shrink(self, node: NodeRecord) -> None:
        """Jobs with weight on a node being drained: their share moves to active nodes.

        Their next weight-map version leaves the node out, so it receives no new data (it
        refuses puts too), and it is stopped once its jobs have deleted what it stores.
        """
        for job in self.jobs.values():
            part = job.alloc.pop(node.name, None)
            if part is not None:
                self._move(job, part, node.tier, start=False)

    def _relieve(self, job: JobRecord, address: str) -> None:
        """A write of ``job`` found the node at ``address`` full: the job's share there moves
        to running nodes with room, else onto the job's other nodes (a new weight-map version
        without it), as when a node is drained. No node is started for it: growing the fleet
        stays the autoscaler's, inside its band. What the node holds stays readable through
        the older maps, and the job's overwrites and deletes free it. Nothing changes if the
        node is no longer in the job's newest map (another report came first: repeated
        reports make one new version) or the job has nowhere else to go."""
        node = next((n for n in self.nodes.values() if n.address == address), None)
        if node is None or node.name not in job.alloc or not job.maps:
            return
        before, alloc = job.maps[-1], dict(job.alloc)
        if address not in before.weights:
            return
        self._move(job, job.alloc.pop(node.name), node.tier, start=False, avoid=node.name)
        if job.maps[-1] is before:  # nowhere else to go: as it was, and the write fails
            job.alloc.clear()
            job.alloc.update(alloc)
            return
        log.info("job %s: %s is full; its share moves to other nodes", job.id, node.name)

    def _move(
        self, job: JobRecord, part: tuple[int, int], tier: str, *, start: bool, avoid: str = ""
    ) -> None:
        """Place ``part`` (throughput, capacity) of ``job`` elsewhere; a new map version.

        Running nodes of the tier first (fullest first, never ``avoid``); the rest on new
        nodes if ``start``, else on the job's other nodes, over their allocation (the tier was
        cold).
        """
        spec = self._spec(tier)
        demand = Demand(tier, max(part[0], 1), max(part[1], 1), job.demand.bound, 0)
        loads = [ld for ld in self._loads(demand.tier, "active") if ld.name != avoid]
        placement = pack(demand, loads, spec)
        for name, share in placement.shares.items():
            job.add_alloc(name, charge_share(demand, share))
        rest = sum(placement.new_nodes)
        if rest > 0:
            fraction = part[0] / job.demand.throughput * rest
            room = self._fleet_size() < self.max_nodes
            handle = None
            if start and self.provisioner is not None and room:
                try:
                    handle = self._start_node(spec)
                except Exception as exc:  # the job still gets its new map, over what runs
                    log.warning("could not start a %s node for job %s: %s", tier, job.id, exc)
            if handle is not None:
                job.pending[handle] = fraction
            else:
                targets = [n for n in job.alloc if self.nodes[n].state == "active"] or [
                    ld.name for ld in loads
                ]
                for name in targets:  # (none only if the tier has no active node at all)
                    job.add_alloc(name, charge_share(demand, rest / len(targets)))
        self._new_map(job)

    def _tier_catalog(self) -> dict[str, TierSpec]:
        catalog = dict(self.tiers) if self.provisioner is not None else {}
        for node in self.nodes.values():
            if node.state == "active" and node.tier not in catalog:
                catalog[node.tier] = self._spec(node.tier)
        return catalog

    def _spec(self, tier: str) -> TierSpec:
        """The tier's spec: what the provisioner starts, else what its nodes offer (priced
        from the configured or default table)."""
        if tier in self.tiers and self.provisioner is not None:
            return self.tiers[tier]
        known = self.tiers.get(tier) or DEFAULT_TIERS.get(tier)
        nodes = [n for n in self.nodes.values() if n.tier == tier and n.state != "dead"]
        if not nodes:
            return known or TierSpec(tier, 1 << 30, 1 << 30, 0.0)
        price = known.price_per_hour if known else 0.0
        return TierSpec(tier, max(n.capacity for n in nodes), max(n.bandwidth for n in nodes),
                        price)  # fmt: skip

    def _all_specs(self) -> dict[str, TierSpec]:
        specs = dict(DEFAULT_TIERS)
        specs.update(self.tiers)
        return specs

    def _loads(self, tier: str, state: str) -> list[NodeLoad]:
        return node_loads(self.nodes.values(), self.jobs.values(), tier, state)

    def _fleet_size(self) -> int:
        return sum(1 for n in self.nodes.values() if n.state != "dead") + len(self.starting)


class _Partial(Exception):
    """A tier can hold only part of a job (``placement``); the rest may go to other tiers."""

    def __init__(self, placement: Placement) -> None:
        super().__init__("partial placement")
        self.placement = placement


def _held(placement: Placement) -> float:
    """The fraction of a job a placement holds: on running nodes and on nodes to start."""
    return placement.placed + sum(placement.new_nodes)


def charge_share(demand: Demand, fraction: float) -> tuple[int, int]:
    """(throughput, capacity) of ``fraction`` of ``demand``, rounded up."""
    return math.ceil(demand.throughput * fraction), math.ceil(demand.capacity * fraction)
