"""The controller: nodes, jobs, allocation, heartbeats and the autoscaling loop.

It turns a job's hints into an allocation on the cheapest tier that serves it (see
:mod:`pocketlib.routing.allocation`), hands the job a :class:`~pocketlib.ticket.Ticket`, and
keeps the fleet inside its utilization band (:mod:`pocketlib.routing.autoscale`). It never
touches data: clients route keys themselves, and the controller talks to nodes only to tell
them a job's newest weight-map version before any ticket carries it (so that nodes fence
handles with older tickets) and to free a deregistered job's data.
:mod:`pocketlib.control.server` serves it over TCP; its records and state file are in
:mod:`pocketlib.control.state`.

Concurrency: one lock over the state; nothing slow (network calls, process starts) runs under
it, so registering a job never waits for a node to start unless no running node can take any
of the job (then only that registration waits, bounded by ``start_timeout``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..auth import job_token, node_token, verify
from ..client.client import Client
from ..config import FUNCTION_THROUGHPUT, MAX_JOB_BYTES, Address, JobHints, Timeouts, format_size
from ..errors import CapacityError, ConfigError, PocketError, TokenError, UnknownJobError
from ..protocol import Op, decode_json
from ..routing.allocation import (
    DEFAULT_TIERS,
    TierSpec,
    choose_tier,
)
from ..routing.autoscale import Band, Decision, decide
from ..ticket import DEFAULT_STRIPE_SIZE, UNSTRIPED, Ticket
from .accounting import Ledger
from .placement import Placing, charge_share
from .provisioners import NodeSpec, Provisioner
from .state import (
    CLOSED_MEMORY,
    JobRecord,
    NodeRecord,
    encode_state,
    load_state,
    save_state,
)
from .status import snapshot, timeline_sample

__all__ = ["Controller", "JobRecord", "NodeRecord"]

log = logging.getLogger("pocketlib.control.controller")

#: How long the controller waits on a node while telling it a new weight-map version: a node
#: that does not answer in time is unreachable for clients too, and hears the version from the
#: answer to its next heartbeat.
PUBLISH_TIMEOUTS = Timeouts(connect=1.0, io=2.0)


class Controller(Placing):
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

    # -- jobs ---------------------------------------------------------------------------------
    def register_job(self, name: str, hints: JobHints | None = None) -> Ticket:
        """Allocate a job; its ticket. CapacityError if the cluster cannot hold it."""
        hints = hints or JobHints()
        if not name or len(name.encode()) > MAX_JOB_BYTES - 16:
            raise ConfigError(f"a job name must be 1 to {MAX_JOB_BYTES - 16} bytes")
        job_id = f"{name}-{secrets.token_hex(6)}"
        with self.lock:
            catalog = self._tier_catalog()
            spec, demand = choose_tier(hints, catalog, function_throughput=self.function_throughput)
            parts = self._place_spanning(hints, demand, spec, catalog)
            job = JobRecord(job_id, name, hints, demand, [], stripe_size=self.stripe_size)
            for part_spec, placement, scale in parts:
                for node_name, fraction in placement.shares.items():
                    job.alloc[node_name] = charge_share(demand, fraction * scale)
                for fraction in placement.new_nodes:
                    handle = self._start_node(part_spec)
                    job.pending[handle] = fraction * scale
                log.info("job %s registered: %s", job_id, placement.describe())
            self.jobs[job_id] = job
            if job.alloc:
                self._new_map(job)
        if not job.alloc:
            self._wait_for_first_node(job)
        self._save()
        return self.ticket(job_id)

    def _wait_for_first_node(self, job: JobRecord) -> None:
        deadline = time.monotonic() + self.start_timeout
        with self.lock:
            while not job.alloc:
                left = deadline - time.monotonic()
                if left <= 0 or job.id not in self.jobs:
                    self.jobs.pop(job.id, None)
                    raise CapacityError(
                        f"no node for job {job.name!r} started within {self.start_timeout:.0f} s"
                    )
                self._joined.wait(left)

    def _bill_requests(self, node: NodeRecord, job: str, total: int) -> None:
        """``node`` has served ``total`` requests of ``job`` so far: bill the new ones (lock
        held). A total below the last one means the node restarted and counts anew."""
        seen = node.requests.get(job, 0)
        node.requests[job] = total
        self.ledger.count_requests(job, node.tier, total - seen if total >= seen else total)

    def deregister_job(self, job_id: str, token: bytes) -> dict[str, Any]:
        """Free the job's allocation and all its data on every node; its final usage."""
        with self.lock:
            job = self._job(job_id, token)
            # Bill the part of a tick since the last one, so short jobs are billed in full.
            self._charge(job, time.monotonic())
            del self.jobs[job_id]
            self.closed.append(job_id)
            self._closed_set = set(self.closed)
            nodes = {n.address: n for n in self.nodes.values()}
            addresses = sorted({a for m in job.maps for a in m.weights} - job.lost - job.retired)
            for handle in job.pending:
                log.info("node %s was started for %s; the autoscaler will drain it", handle,
                         job_id)  # fmt: skip
        freed, unreachable = self._free_on_nodes(job_id, addresses, nodes)
        self._save()
        log.info("job %s deregistered: %d object(s) freed", job_id, freed)
        usage = self.ledger.usage_of(job_id, self._all_specs())
        return {"objects": freed, "unreachable": unreachable, "usage": usage}

    def _free_on_nodes(
        self, job_id: str, addresses: list[str], nodes: Mapping[str, NodeRecord]
    ) -> tuple[int, list[str]]:
        """JOB_DELETE on every node, after reading its last request count for the bill."""
        if not addresses:
            return 0, []
        token = job_token(self._secret, job_id)
        freed, unreachable = 0, []
        with self.lock:  # one client (and its pooled connections) for every deregistration
            if self._nodes_client is None:
                self._nodes_client = Client(addresses)
            client = self._nodes_client
        for address in addresses:
            try:
                stats = decode_json(client.call(address, Op.STATS)[1])
                node = nodes.get(address)
                if node is not None:  # requests since its last heartbeat
                    with self.lock:
                        self._bill_requests(
                            node, job_id, int(stats.get("job_ops", {}).get(job_id, 0))
                        )
                freed += client.call(address, Op.JOB_DELETE, job_id.encode(), token)[0].size
            except PocketError as exc:  # the node's next heartbeat is told to drop it
                log.warning("could not free %s on %s: %s", job_id, address, exc)
                unreachable.append(address)
        return freed, unreachable

    def ticket(self, job_id: str, token: bytes | None = None) -> Ticket:
        """The job's current ticket (``token`` is checked when given).

        A weight map no ticket carried yet is first made known to the job's nodes."""
        with self.lock:
            job = self._job(job_id, token)  # (unknown job, wrong token: raised before any push)
            unpublished = bool(job.maps) and job.maps[-1].version > job.published
        if unpublished:
            self._publish(job_id)
        with self.lock:
            job = self._job(job_id, token)
            maps = tuple(m for m in job.maps if m.version <= job.published)
            # Striping draws on the bandwidth of several machines; nodes sharing one host share
            # its memory bus, and there chunks only add requests (measured 1.1-2x slower in
            # docs/benchmarks.md), so a job whose nodes are all on one host is not striped.
            hosts = {Address.parse(a).host for a in maps[-1].weights} if maps else set()
            stripe = job.stripe_size if len(hosts) > 1 else UNSTRIPED
            return Ticket(
                job=job.id, name=job.name, token=job_token(self._secret, job.id),
                maps=maps, stripe_size=stripe, lost=frozenset(job.lost),
                retired=frozenset(job.retired), controller=self.address,
            )  # fmt: skip

    def _publish(self, only: str | None = None) -> None:
        """Hand out new weight maps: tell each of a job's nodes its newest version first.

        From then on a node fences requests made under older tickets (writes and deletes are
        refused, a miss is answered StaleTicketError), so a handle holding an old ticket
        refreshes instead of writing where no newer handle looks, or taking a miss on one node
        for "no such key" while the key lives where only the newer map sends it. Called
        outside the lock (it makes network calls); concurrent calls only repeat a push.
        """
        work: list[tuple[str, int, list[str]]] = []
        with self.lock:
            dead = {n.address for n in self.nodes.values() if n.state == "dead"}
            for job in self.jobs.values():
                newest = job.maps[-1].version if job.maps else 0
                if (only is not None and job.id != only) or newest <= job.published:
                    continue
                if not job.published:  # no ticket yet: no handle holds an older map
                    job.published = newest
                    continue
                gone = job.lost | job.retired | dead
                nodes = sorted({a for m in job.maps for a in m.weights} - gone)
                work.append((job.id, newest, nodes))
            every = sorted({a for _, _, nodes in work for a in nodes})
            if every and self._publish_client is None:
                self._publish_client = Client(every, timeouts=PUBLISH_TIMEOUTS)
            client = self._publish_client
        for job_id, version, nodes in work:
            token = job_token(self._secret, job_id)
            for address in nodes:
                try:
                    assert client is not None  # (made above for every address of the work)
                    client.call(address, Op.JOB_MAP_VERSION, job_id.encode(), token, arg=version)
                except PocketError as exc:  # unreachable: it catches up from its heartbeat
                    log.warning("could not tell %s of %s v%d: %s", address, job_id, version, exc)
            with self.lock:
                record = self.jobs.get(job_id)
                if record is not None and version > record.published:
                    record.published = version
                    log.info("job %s: weight map v%d handed out", job_id, version)

    def _job(self, job_id: str, token: bytes | None) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            why = "was deregistered" if job_id in self._closed_set else "is not registered"
            raise UnknownJobError(f"job {job_id!r} {why}")
        if token is not None and not verify(token, job_token(self._secret, job_id)):
            raise TokenError(f"wrong token for job {job_id!r}")
        return job

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

    def _charge(self, job: JobRecord, now: float) -> None:
        """Bill ``job`` since it was last billed, per tier (a job may span tiers)."""
        elapsed, job.charged = now - job.charged, now
        per_tier: dict[str, list[int]] = {}
        for name, (t, c) in job.alloc.items():
            node = self.nodes.get(name)
            row = per_tier.setdefault(node.tier if node else job.demand.tier, [0, 0, 0])
            row[0] += t
            row[1] += c
        for node in self.nodes.values():
            if job.id in node.job_bytes:
                per_tier.setdefault(node.tier, [0, 0, 0])[2] += node.job_bytes[job.id]
        for tier, (throughput, capacity, used) in (
            per_tier or {job.demand.tier: [0, 0, 0]}
        ).items():
            self.ledger.charge(job.id, tier, elapsed, capacity, throughput, used)

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

    # -- helpers ------------------------------------------------------------------------------
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

    def close(self) -> None:
        """Close the controller's connections to nodes (its state stays as it is)."""
        with self.lock:
            clients = (self._nodes_client, self._publish_client)
            self._nodes_client = self._publish_client = None
        for client in clients:
            if client is not None:
                client.close()

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

    def _all_specs(self) -> dict[str, TierSpec]:
        specs = dict(DEFAULT_TIERS)
        specs.update(self.tiers)
        return specs

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
