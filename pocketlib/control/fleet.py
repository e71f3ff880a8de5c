"""The fleet: nodes registering and heartbeating, and the control loop that keeps it sized.

The controller's side of its nodes (a mixin of :class:`~pocketlib.control.controller.Controller`,
over its :class:`~pocketlib.control.jobs.Jobs`): a node joins (or rejoins after a controller
restart), and its heartbeats report its load and answer what it missed; each tick finds nodes
that missed their heartbeats, forgets nodes that never registered, bills the fleet and its jobs,
and keeps every tier inside its utilization band (:mod:`pocketlib.routing.autoscale`) by
starting, draining and stopping nodes through the provisioner.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..auth import node_token, verify
from ..config import Address, format_size
from ..errors import ConfigError, TokenError
from ..routing.allocation import TierSpec
from ..routing.autoscale import Decision, decide
from .jobs import Jobs
from .provisioners import NodeSpec
from .state import NodeRecord
from .status import timeline_sample

__all__ = ["Fleet"]

log = logging.getLogger("pocketlib.controller")


class Fleet(Jobs):
    """The controller's nodes and its loop (a mixin:
    :class:`~pocketlib.control.controller.Controller` holds the state below)."""

    secret: str
    min_nodes: dict[str, int]
    dead_after: float
    scale_down_delay: float
    scale_up_delay: float
    autoscale: bool
    _scale_ups: set[str]
    _last_tick: float | None
    decisions: deque[tuple[float, Decision]]
    timeline: deque[dict[str, Any]]

    # -- nodes --------------------------------------------------------------------------------
    def register_node(self, body: Mapping[str, Any], token: bytes) -> dict[str, Any]:
        """A node joins (or rejoins after a controller restart)."""
        name = _text(body, "name")
        if not verify(token, node_token(self._secret, name)):
            raise TokenError(f"node {name!r} does not hold the cluster secret")
        address = str(Address.parse(_text(body, "address")))
        tier = _text(body, "tier")
        capacity, bandwidth = _positive(body, "capacity"), _positive(body, "bandwidth")
        with self.lock:
            record = self.nodes.get(name)
            if record is None:
                record = self.nodes[name] = NodeRecord(name, address, tier, capacity, bandwidth)
            else:
                record.address, record.tier = address, tier
                record.capacity, record.bandwidth = capacity, bandwidth
                if record.state == "dead":
                    record.state = "active"
            record.last_seen = time.monotonic()
            grow = name in self._scale_ups
            if name in self.starting:
                del self.starting[name]
                record.provisioned = True
            self._scale_ups.discard(name)
            for job in self.jobs.values():
                # An address may come back (a restarted node, a reused pod IP): it is a node
                # again, so no ticket may skip it as lost or retired.
                job.lost.discard(address)
                job.retired.discard(address)
                if name in job.pending:
                    self._join_job(job, record, job.pending.pop(name))
            if grow:
                self._grow_hot_jobs(record)
            log.info("node %s (%s, %s, %s) registered", name, tier, address,
                     format_size(capacity))  # fmt: skip
            self._joined.notify_all()
        self._publish()
        self._save()
        return {"ok": True}

    def heartbeat(self, body: Mapping[str, Any], token: bytes) -> dict[str, Any]:
        """A node's load; the answer asks it to register again or to drop closed jobs."""
        name = _text(body, "name")
        if not verify(token, node_token(self._secret, name)):
            raise TokenError(f"node {name!r} does not hold the cluster secret")
        with self.lock:
            record = self.nodes.get(name)
            if record is None:
                return {"register": True}
            record.last_seen = time.monotonic()
            if record.state == "dead":
                record.state = "active"  # it was unreachable, not gone: its data is intact
                for held in self.jobs.values():
                    held.lost.discard(record.address)
            record.cpu = float(body.get("cpu", 0.0))
            record.net = float(body.get("net", 0.0))
            record.used = int(body.get("used", 0))
            record.job_bytes = {str(k): int(v) for k, v in dict(body.get("jobs", {})).items()}
            for job, n in dict(body.get("requests", {})).items():
                self._bill_requests(record, str(job), int(n))
            # Heartbeats since the node said it refuses new data: the first may still race
            # with a put that passed its check; from the second on, ``used`` is final.
            draining = record.state == "draining"
            record.drain_beats = record.drain_beats + 1 if draining and body.get("draining") else 0
            stale = [j for j in record.job_bytes if j in self._closed_set]
            behind = self._versions_behind(record.address, dict(body.get("map_versions", {})))
        reply: dict[str, Any] = {"drain": draining}
        if stale:
            reply["delete_jobs"] = stale
        if behind:
            reply["map_versions"] = behind
        return reply

    def _versions_behind(self, address: str, known: Mapping[str, Any]) -> dict[str, int]:
        """The published weight-map versions of jobs on ``address`` that the node has not
        learnt: a node that missed a push (unreachable, restarted) catches up (lock held)."""
        return {
            job.id: job.published
            for job in self.jobs.values()
            if job.published > 1 and int(known.get(job.id, 0)) < job.published
            and address not in job.lost and address not in job.retired
            and any(address in m.weights for m in job.maps)
        }  # fmt: skip

    # -- the loop -----------------------------------------------------------------------------
    def tick(self) -> list[Decision]:
        """One second of the control loop: dead nodes, accounting, autoscaling."""
        now = time.monotonic()
        to_stop: list[str] = []
        with self.lock:
            elapsed = 0.0 if self._last_tick is None else now - self._last_tick
            self._last_tick = now
            changed = self._find_dead(now)
            # Stopping a process or deleting a pod can take seconds: done after the lock.
            to_stop.extend(self._expire_starting(now))
            self._account(elapsed, now)
            decisions: list[Decision] = []
            if self.autoscale:
                decisions = self._autoscale()
                for d in decisions:
                    self.decisions.append((time.time(), d))
                    log.info("autoscale: %s %s", d, _figures(d.figures))
                    if d.action == "add":
                        self._scale_ups.add(self._start_node(self.tiers[d.tier]))
                    elif d.action == "drain" and d.node:
                        self.nodes[d.node].state = "draining"
                        self._shrink(self.nodes[d.node])
                    elif d.action == "stop" and d.node:
                        gone = self.nodes.pop(d.node)
                        to_stop.append(d.node)
                        for job in self.jobs.values():
                            if any(gone.address in m.weights for m in job.maps):
                                job.retired.add(gone.address)
        self._publish()  # new maps reach their nodes before any refresh asks for them
        for name in to_stop:
            if self.provisioner is not None:
                self.provisioner.stop_node(name)
        if decisions or changed:  # new maps, drained or lost nodes: a restart must see them
            self._save()
        return decisions

    def _find_dead(self, now: float) -> bool:
        """Mark nodes that missed their heartbeats dead; whether any was."""
        found = False
        for node in self.nodes.values():
            if node.state != "dead" and now - node.last_seen > self.dead_after:
                node.state = "dead"
                log.warning("node %s (%s) missed its heartbeats: dead", node.name, node.address)
                self._replace(node)
                found = True
        return found

    def _expire_starting(self, now: float) -> list[str]:
        """Nodes that never registered: forgotten; their handles, to be stopped (unlocked)."""
        expired = []
        for handle, (tier, started) in list(self.starting.items()):
            if now - started > self.start_timeout:
                log.warning("node %s (%s) never registered; giving up on it", handle, tier)
                del self.starting[handle]
                for job in self.jobs.values():
                    job.pending.pop(handle, None)
                expired.append(handle)
        return expired

    def _account(self, elapsed: float, now: float) -> None:
        per_tier: dict[str, int] = {}
        for node in self.nodes.values():
            if node.state != "dead":
                per_tier[node.tier] = per_tier.get(node.tier, 0) + 1
        if elapsed > 0:
            self.ledger.run_fleet(per_tier, elapsed)
        for job in self.jobs.values():
            self._charge(job, now)
        self.timeline.append(
            timeline_sample(per_tier, len(self.starting), self.nodes.values(), self.jobs.values())
        )

    def _autoscale(self) -> list[Decision]:
        tiers = {n.tier for n in self.nodes.values()} | set(self.min_nodes)
        active = {t: self._loads(t, "active") for t in tiers}
        draining = {t: self._loads(t, "draining") for t in tiers}
        starting: dict[str, int] = {}
        for tier, _ in self.starting.values():
            starting[tier] = starting.get(tier, 0) + 1
        decisions = decide(active, draining, starting, band=self.band,
                           min_nodes=self.min_nodes, max_nodes=self.max_nodes)  # fmt: skip
        # A tier drains only once it has been cold for scale_down_delay, and grows only once
        # it has been hot for scale_up_delay: not on one noisy sample, nor while a job just
        # placed on it ramps up. (A tier below its minimum grows at once.)
        now = time.monotonic()
        held = {
            (d.action, d.tier) for d in decisions
            if d.action == "drain" or (d.action == "add" and d.figures)
        }  # fmt: skip
        for key in list(self._since):
            if key not in held:
                del self._since[key]
        for key in held:
            self._since.setdefault(key, now)
        wait = {"drain": self.scale_down_delay, "add": self.scale_up_delay}

        def ripe(d: Decision) -> bool:
            key = (d.action, d.tier)
            return key not in self._since or now - self._since[key] >= wait[d.action]

        # Only provisioned nodes can be stopped (others stay drained until stopped by hand),
        # and only once two heartbeats said they refuse new data.
        return [
            d for d in decisions
            if d.action != "stop" or (d.node is not None and self.nodes[d.node].provisioned
                                      and self.nodes[d.node].drain_beats >= 2)
            if d.action != "add" or (self.provisioner is not None and d.tier in self.tiers)
            if ripe(d)
        ]  # fmt: skip

    def _start_node(self, spec: TierSpec) -> str:
        assert self.provisioner is not None
        assert self.address is not None, "the controller must be served before it starts nodes"
        handle = self.provisioner.start_node(
            NodeSpec(spec.name, spec.node_capacity, spec.node_bandwidth),
            Address.parse(self.address), self.secret,
        )  # fmt: skip
        self.starting[handle] = (spec.name, time.monotonic())
        log.info("starting %s node %s", spec.name, handle)
        return handle


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name!r} must be a non-empty string")
    return value


def _positive(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name!r} must be a positive int")
    return value


def _figures(figures: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in figures.items())
