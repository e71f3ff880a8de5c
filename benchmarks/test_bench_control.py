"""pytest-benchmark: the control plane's calls, next to a bare round trip to the controller.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_control.py -m bench --benchmark-only -p no:cacheprovider

A LocalCluster of two DRAM nodes with room to spare and the autoscaler off, so registration
measures allocation and the ticket, never a node starting. The peer is a PING to the
controller: the same frames and JSON channel doing nothing, the floor any control call pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.protocol import Op

pytestmark = [pytest.mark.bench]
#: Fixed rounds: each registration leaves a job (and warm-up by iterations would be 100,000).
ROUNDS = {"rounds": 300, "warmup_rounds": 10, "iterations": 1}

HINTS = JobHints(capacity="1MiB", peak_throughput="1MB/s")


@pytest.fixture(scope="module")
def client() -> Iterator[pocketlib.Client]:
    with LocalCluster(node_capacity="1GiB", autoscale=False) as cluster, cluster.client() as c:
        yield c


def test_ping_controller(benchmark: Any, client: pocketlib.Client) -> None:
    benchmark.pedantic(client.control, args=(Op.PING, {}), **ROUNDS)


def test_register_job(benchmark: Any, client: pocketlib.Client) -> None:
    jobs: list[pocketlib.Job] = []
    benchmark.pedantic(lambda: jobs.append(client.register_job("bench", HINTS)), **ROUNDS)
    assert jobs[0].ticket.maps
    for job in jobs:
        job.deregister()


def test_register_and_deregister(benchmark: Any, client: pocketlib.Client) -> None:
    benchmark.pedantic(lambda: client.register_job("bench", HINTS).deregister(), **ROUNDS)


def test_attach_ticket(benchmark: Any, client: pocketlib.Client) -> None:
    """What a function pays to start using a job: parse the ticket, build its router."""
    job = client.register_job("bench", HINTS)
    text = job.ticket.to_json()
    benchmark.pedantic(lambda: pocketlib.attach(text).close(), **ROUNDS)
    job.deregister()
