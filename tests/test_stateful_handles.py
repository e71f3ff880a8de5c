"""Handles of one job holding tickets of different ages, while the job grows and loses a node.

Hypothesis drives puts, gets, deletes, listings and batched operations through several handles
of one job, each attached from a ticket the job had at some point (the oldest, the newest, any
in between), while the controller grows the job onto more nodes and a node of the job is
killed. A plain dict is the model: every read through any handle must reflect every write
acknowledged before it, through any other handle. Values on the killed node are lost with it
(the model forgets them): reading one raises NodeLostError or NotFoundError, never old bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import ClassVar

import hypothesis.strategies as st
import pytest
from _helpers import wait_until
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.errors import NodeLostError, NotFoundError

keys = st.sampled_from([f"{d}/{i}" for d in ("a", "b") for i in range(8)])
values = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=70_000, max_value=300_000).map(lambda n: os.urandom(n)),
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Four DRAM nodes, replaced when one dies; nothing drains while the test runs."""
    with LocalCluster(
        {"dram": 4}, node_capacity="48MiB", tick=0.1, dead_after=0.6, scale_down_delay=3600
    ) as c:
        yield c


class HandlesModel(RuleBasedStateMachine):
    """Every handle of the job must behave like one dict of every acknowledged write."""

    cluster: LocalCluster
    #: What the examples exercised (the test checks they did what it is about).
    seen: ClassVar[dict[str, int]] = {"kills": 0, "stale": 0, "grown": 0}

    @initialize()
    def register(self) -> None:
        self.client = self.cluster.client()
        self.driver = self.client.register_job("ages", JobHints(capacity="4MiB"))
        self.tickets = [self.driver.ticket.to_json()]  # every version seen, oldest first
        self.handles = [self.client.attach(self.tickets[0])]
        self.model: dict[str, bytes] = {}
        self.where: dict[str, str] = {}  # key -> node its value was written to
        self.lost: set[str] = set()  # keys whose value went with a killed node
        self.killed = False

    def teardown(self) -> None:
        if hasattr(self, "driver"):
            self.driver.deregister()
            self.client.close()

    # -- the job changes ----------------------------------------------------------------------
    def _publish(self) -> None:
        """Hand out the job's newest map (as a refresh would) and remember its ticket."""
        ticket = self.cluster.controller.ticket(self.driver.ticket.job)
        if ticket.to_json() != self.tickets[-1]:
            self.tickets.append(ticket.to_json())

    @rule()
    def grow(self) -> None:
        c = self.cluster.controller
        with c.lock:
            record = c.jobs[self.driver.ticket.job]
            spare = [n for n, r in c.nodes.items() if r.state == "active" and n not in record.alloc]
            if not spare:
                return
            t = sum(a[0] for a in record.alloc.values()) // len(record.alloc)
            cap = sum(a[1] for a in record.alloc.values()) // len(record.alloc)
            record.alloc[spare[0]] = (t, cap)
            c._new_map(record)
        self._publish()
        HandlesModel.seen["grown"] += 1

    @precondition(lambda self: not self.killed)
    @rule()
    def lose_a_node(self) -> None:
        c = self.cluster.controller
        if len(c.ticket(self.driver.ticket.job).maps[-1].weights) < 2:
            self.grow()  # (so that the job keeps a node)
        with c.lock:
            record = c.jobs[self.driver.ticket.job]
            newest = record.maps[-1].weights
            if len(newest) < 2:
                return
            victim = next(n for n, r in c.nodes.items() if r.address in newest)
            address = c.nodes[victim].address
        self.cluster.provisioner.kill_node(victim)
        self.killed = True
        HandlesModel.seen["kills"] += 1
        wait_until(lambda: address in c.jobs[self.driver.ticket.job].lost, what="the loss")
        self._publish()
        for key in [k for k, node in self.where.items() if node == address]:
            self.model.pop(key, None)
            self.where.pop(key)
            self.lost.add(key)

    @rule(age=st.integers(min_value=0, max_value=20))
    def attach(self, age: int) -> None:
        ticket = self.tickets[min(age, len(self.tickets) - 1)]
        if len(self.handles) >= 6:
            self.handles.pop(0).close()
        self.handles.append(self.client.attach(ticket))

    # -- data through any handle ---------------------------------------------------------------
    def _handle(self, i: int) -> pocketlib.Job:
        h = self.handles[i % len(self.handles)]
        if h.ticket.version < self.driver.client.ticket(self.driver).version:
            HandlesModel.seen["stale"] += 1
        return h

    @rule(i=st.integers(0, 5), key=keys, value=values)
    def put(self, i: int, key: str, value: bytes) -> None:
        h = self._handle(i)
        h.put(key, value)
        self._stored(h, key, value)

    def _stored(self, h: pocketlib.Job, key: str, value: bytes) -> None:
        self.model[key] = value
        self.where[key] = h.router.write_node(key.encode())
        self.lost.discard(key)

    @rule(i=st.integers(0, 5), items=st.dictionaries(keys, st.binary(max_size=100), max_size=5))
    def put_many(self, i: int, items: dict[str, bytes]) -> None:
        h = self._handle(i)
        h.put_many(items)
        for key, value in items.items():
            self._stored(h, key, value)

    @rule(i=st.integers(0, 5), key=keys)
    def get(self, i: int, key: str) -> None:
        h = self._handle(i)
        if key in self.model:
            assert h.get(key) == self.model[key]
        else:  # a miss; once a node is lost, any key it may have held says so instead
            with pytest.raises((NodeLostError, NotFoundError) if self.killed else NotFoundError):
                h.get(key)

    @rule(i=st.integers(0, 5), key=keys)
    def exists_and_stat(self, i: int, key: str) -> None:
        h = self._handle(i)
        assert h.exists(key) == (key in self.model)
        if key in self.model:
            assert h.stat(key).size == len(self.model[key])

    @rule(i=st.integers(0, 5), wanted=st.lists(keys, max_size=6, unique=True))
    def get_many(self, i: int, wanted: list[str]) -> None:
        got = self._handle(i).get_many(wanted)
        assert got == {k: self.model[k] for k in wanted if k in self.model}

    @rule(i=st.integers(0, 5), key=keys)
    def delete(self, i: int, key: str) -> None:
        existed = self._handle(i).delete(key)
        assert existed == (key in self.model)
        self.model.pop(key, None)
        self.where.pop(key, None)

    @rule(i=st.integers(0, 5), prefix=st.sampled_from(["", "a/", "b/", "a/1"]))
    def list(self, i: int, prefix: str) -> None:
        listed = list(self._handle(i).list(prefix))
        assert listed == sorted(k for k in self.model if k.startswith(prefix))

    @invariant()
    def handles_never_go_back(self) -> None:
        for h in getattr(self, "handles", []):
            assert 1 <= h.ticket.version <= self.driver.client.ticket(self.driver).version


def test_handles_of_every_age_see_every_acknowledged_write(cluster: LocalCluster) -> None:
    HandlesModel.cluster = cluster
    run_state_machine_as_test(
        HandlesModel,
        settings=settings(
            max_examples=int(os.environ.get("POCKET_STATEFUL_EXAMPLES", "10")),
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    print(HandlesModel.seen)
    assert all(HandlesModel.seen.values()), HandlesModel.seen
