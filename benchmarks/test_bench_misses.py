"""pytest-benchmark: what a miss costs, from a current ticket and from a stale one, next to a hit.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_misses.py -m bench --benchmark-only -p no:cacheprovider

A LocalCluster of two DRAM nodes with the autoscaler off and two jobs: ``one`` keeps its first
weight map (v1, one node); ``grown`` starts on one node and is grown onto the other (v2), as a
hot tier makes it, by the controller's own ``_new_map`` (as ``tests/test_consistency.py``
does). A handle attached from ``grown``'s v1 ticket is stale: since map-version fencing its
node answers a miss with StaleTicketError, and the handle refreshes and repeats. The file also
runs on the code before fencing (it catches ``NotFoundError`` only), where the stale handle's
miss is answered at once, and wrongly for a key only v2 sends elsewhere.

Every case is its own group; the median is the p50. Redis (a redis-server started for the
module, redis-py with hiredis) is the peer: a GET of a key that exists and of one that does not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.bench.redis_peer import RedisServer
from pocketlib.control.controller import Controller

pytestmark = pytest.mark.bench

HINTS = JobHints(capacity="8MiB")
VALUE = os.urandom(1 << 10)
HIT = "bench/hit"
#: The stale-handle case builds a handle per round (outside the timing): fixed rounds.
STALE_ROUNDS = {"rounds": 2000, "warmup_rounds": 50, "iterations": 1}
#: Operations of each kind run before any timing (pytest-benchmark's own warm-up is off).
WARMUP = 300


@dataclass
class Jobs:
    client: pocketlib.Client
    one: pocketlib.Job  # one weight-map version
    grown: pocketlib.Job  # two versions, the second on the other node
    v1_ticket: str  # grown's ticket before it grew (JSON)
    v2_ticket: str  # its ticket after
    miss: str  # a key never written that v1 and v2 send to different nodes


def _grow(c: Controller, job_id: str) -> None:
    """The job grows onto the cluster's other node: a new weight-map version."""
    with c.lock:
        record = c.jobs[job_id]
        (a,) = record.alloc
        b = next(n for n in c.nodes if n not in record.alloc)
        record.alloc[b] = record.alloc[a]
        c._new_map(record)


def _missing(fn: Callable[[str], Any]) -> Callable[[str], None]:
    """``fn(key)`` that must raise NotFoundError (the only answer a miss may have)."""

    def miss(key: str) -> None:
        with contextlib.suppress(pocketlib.NotFoundError):
            fn(key)
            raise AssertionError(f"{key!r} was found")

    return miss


@pytest.fixture(scope="module")
def jobs() -> Iterator[Jobs]:
    with (
        LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2) as cluster,
        cluster.client() as client,
    ):
        one = client.register_job("bench-miss-one", HINTS)
        grown = client.register_job("bench-miss-grown", HINTS)
        v1 = grown.ticket.to_json()
        _grow(cluster.controller, grown.ticket.job)
        assert grown.refresh()
        assert grown.ticket.version == 2
        assert one.ticket.version == 1
        miss = next(
            k for k in (f"bench/miss/{i}" for i in range(1000))
            if len(grown.router.read_nodes(k.encode())) == 2
        )  # fmt: skip
        one.put(HIT, VALUE)
        for _ in range(WARMUP):  # connections open, code paths warm before the first timing
            one.get(HIT)
            _missing(one.get)(miss)
            _missing(grown.get)(miss)
        try:
            yield Jobs(client, one, grown, v1, grown.ticket.to_json(), miss)
        finally:
            one.deregister()
            grown.deregister()


@pytest.fixture(scope="module")
def redis_client() -> Iterator[Any]:
    with RedisServer() as server:
        client = server.client(socket_timeout=60)
        try:
            client.set(HIT, VALUE)
            for _ in range(WARMUP):
                client.get(HIT)
            yield client
        finally:
            client.close()


@pytest.mark.parametrize("system", ["pocket", "redis"])
def test_get_hit(benchmark: Any, system: str, jobs: Jobs, redis_client: Any) -> None:
    """a. GET of a 1 KiB value that exists, current ticket (one version)."""
    get = jobs.one.get if system == "pocket" else redis_client.get
    benchmark.group = "a. GET hit, 1 KiB"
    benchmark.name = f"{system} GET hit 1 KiB"
    assert benchmark(get, HIT) == VALUE


@pytest.mark.parametrize("system", ["pocket", "redis"])
def test_get_miss(benchmark: Any, system: str, jobs: Jobs, redis_client: Any) -> None:
    """b. GET of a key never written, current ticket with one version: the common miss.
    Redis's GET of a missing key answers None."""
    benchmark.group = "b. GET miss, current ticket, 1 version"
    if system == "pocket":
        benchmark.name = "pocket GET miss (1 version)"
        benchmark(_missing(jobs.one.get), jobs.miss)
    else:
        benchmark.name = "redis GET miss"
        assert benchmark(redis_client.get, jobs.miss) is None


def test_get_miss_two_versions(benchmark: Any, jobs: Jobs) -> None:
    """c. GET miss, current ticket of a job that grew: the newest version's node, then the
    older one's (the key was chosen so that the two differ): two requests."""
    benchmark.group = "c. GET miss, current ticket, 2 versions"
    benchmark.name = "pocket GET miss (2 versions)"
    benchmark(_missing(jobs.grown.get), jobs.miss)


@pytest.mark.parametrize("ticket", ["stale", "current"])
def test_get_miss_fresh_handle(benchmark: Any, ticket: str, jobs: Jobs) -> None:
    """d. GET miss from a handle used for the first time: each round attaches a new handle
    (``client.attach``, the client's pooled connections) in the setup, outside the timing.

    ``stale``: attached from the v1 ticket after the job grew to v2. Timed: the miss on the v1
    node, answered StaleTicketError; the refresh (a JOB_INFO round trip to the controller and
    the new router); the repeated GET under v2 (two requests, both misses). Before fencing:
    the one miss on the v1 node, NotFoundError at once (for a key only v2 sends elsewhere, a
    false miss). ``current``: attached from the v2 ticket, the same first use without the
    staleness (two requests), so the difference between the two rows is what the stale ticket
    costs."""
    text = jobs.v1_ticket if ticket == "stale" else jobs.v2_ticket
    handles: list[pocketlib.Job] = []

    def attach() -> tuple[tuple[Any, ...], dict[str, Any]]:
        handles[:] = [jobs.client.attach(text)]  # the last round's handle stays for the check
        return (handles[0],), {}

    def miss(handle: pocketlib.Job) -> None:
        with contextlib.suppress(pocketlib.NotFoundError):
            handle.get(jobs.miss)
            raise AssertionError(f"{jobs.miss!r} was found")

    benchmark.group = "d. GET miss, fresh handle"
    benchmark.name = f"pocket GET miss, {ticket} handle"
    benchmark.pedantic(miss, setup=attach, **STALE_ROUNDS)
    # Fencing makes a stale handle refresh on its miss; the code before it answered at once.
    fenced = hasattr(pocketlib, "StaleTicketError")
    benchmark.extra_info["version after the miss"] = handles[0].ticket.version
    assert handles[0].ticket.version == (2 if fenced or ticket == "current" else 1)


def test_refresh(benchmark: Any, jobs: Jobs) -> None:
    """d. (reference) What the stale handle's refresh costs by itself: the JOB_INFO round trip
    to the controller for an unchanged ticket (``job.refresh()`` answering False)."""
    benchmark.group = "d. GET miss, fresh handle"
    benchmark.name = "refresh, ticket unchanged (JOB_INFO)"
    assert benchmark(jobs.grown.refresh) is False


def test_exists_miss(benchmark: Any, jobs: Jobs) -> None:
    """e. exists() of a key never written, current ticket with one version."""
    benchmark.group = "e. exists() miss, current ticket, 1 version"
    benchmark.name = "pocket exists() miss (1 version)"
    assert benchmark(jobs.one.exists, jobs.miss) is False
