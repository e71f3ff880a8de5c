"""pytest-benchmark: what ``@pocketlib.serverless.handler`` adds to a warm invocation.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_serverless.py -m bench --benchmark-only \
        -p no:cacheprovider

Both handlers put and get a 1 KiB value over TCP (``POCKET_SHARED_MEMORY=0``, as inside
Lambda) on a LocalCluster of one DRAM node. The bare handler uses a job attached beforehand at
module level, as a hand-written function would; the decorated one finds the ticket in its
event, takes the environment's cached job, sets the invocation's deadline (every request's
socket timeouts cut to the time left) and checks the event and the result for references.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster

pytestmark = [pytest.mark.bench]
VALUE = os.urandom(1024)


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture(scope="module")
def ticket() -> Iterator[str]:
    os.environ["POCKET_SHARED_MEMORY"] = "0"
    cluster = LocalCluster({"dram": 1}, node_capacity="256MiB", autoscale=False)
    with cluster, cluster.client() as client:
        job = client.register_job("bench-fn", JobHints(capacity="64MiB"))
        yield job.ticket.to_json()
        job.deregister()
    del os.environ["POCKET_SHARED_MEMORY"]


def work(job: pocketlib.Job, n: int) -> int:
    job.put(f"k{n % 64}", VALUE)
    return len(job.get(f"k{n % 64}"))


@pytest.mark.benchmark(group="warm invocation: put + get 1 KiB")
def test_bare_handler(benchmark: Any, ticket: str) -> None:
    job = pocketlib.attach(ticket)

    def handle(event: dict[str, Any], context: Any) -> int:
        return work(job, event["n"])

    event = {"ticket": ticket, "n": 1}
    assert benchmark(handle, event, Context()) == 1024
    job.close()


@pytest.mark.benchmark(group="warm invocation: put + get 1 KiB")
def test_decorated_handler(benchmark: Any, ticket: str) -> None:
    @pls.handler
    def handle(event: dict[str, Any], context: Any, job: pocketlib.Job) -> int:
        return work(job, event["n"])

    event = {"ticket": ticket, "n": 1}
    handle(event, Context())  # the cold start: attach
    assert benchmark(handle, event, Context()) == 1024
