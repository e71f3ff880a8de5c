"""Jobs: their registration, tickets and weight maps handed out, and their deregistration.

The controller's side of a job's life (a mixin of
:class:`~pocketlib.control.controller.Controller`, over the placement of
:class:`~pocketlib.control.placement.Placing`): a job's hints become an allocation on the
cheapest tier that serves it and a :class:`~pocketlib.ticket.Ticket`; a new weight-map version
is told to the job's nodes before any ticket carries it (so that nodes fence handles with older
tickets); a deregistered job's data is freed on its nodes; and what each job holds and asks
for is billed to the ledger. Nodes are reached only through the protocol, with a
:class:`~pocketlib.client.client.Client`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..auth import job_token, verify
from ..bodies import decode_json
from ..client.client import Client
from ..config import MAX_JOB_BYTES, Address, JobHints, Timeouts
from ..errors import CapacityError, ConfigError, PocketError, TokenError, UnknownJobError
from ..protocol import Op
from ..routing.allocation import choose_tier
from ..ticket import UNSTRIPED, Ticket
from .accounting import Ledger
from .placement import Placing, charge_share
from .state import JobRecord, NodeRecord

__all__ = ["PUBLISH_TIMEOUTS", "Jobs"]

log = logging.getLogger("pocketlib.controller")

#: How long the controller waits on a node while telling it a new weight-map version: a node
#: that does not answer in time is unreachable for clients too, and hears the version from the
#: answer to its next heartbeat.
PUBLISH_TIMEOUTS = Timeouts(connect=1.0, io=2.0)


class Jobs(Placing):
    """The controller's jobs (a mixin: :class:`~pocketlib.control.controller.Controller` holds
    the state below, and saves it)."""

    lock: threading.RLock
    _joined: threading.Condition
    _secret: bytes
    address: str | None
    start_timeout: float
    stripe_size: int
    ledger: Ledger
    closed: deque[str]
    _closed_set: set[str]
    _nodes_client: Client | None
    _publish_client: Client | None

    def _save(self) -> None:
        raise NotImplementedError  # the controller's: it knows its state file

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

    def ticket(self, job_id: str, token: bytes | None = None, *, full: str | None = None) -> Ticket:
        """The job's current ticket (``token`` is checked when given).

        ``full``: a node of the job that refused a write for want of room; the job's share
        there moves to other nodes first, if it has anywhere to go (see ``_relieve``). A
        weight map no ticket carried yet is first made known to the job's nodes."""
        with self.lock:
            job = self._job(job_id, token)  # (unknown job, wrong token: raised before any push)
            if full is not None:
                self._relieve(job, full)
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

    def close(self) -> None:
        """Close the controller's connections to nodes (its state stays as it is)."""
        with self.lock:
            clients = (self._nodes_client, self._publish_client)
            self._nodes_client = self._publish_client = None
        for client in clients:
            if client is not None:
                client.close()
