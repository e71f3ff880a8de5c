"""pytest-benchmark: a 64 MiB GET/PUT on a two-node LocalCluster, striped and whole.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_stripes.py -m bench --benchmark-only -p no:cacheprovider

"striped" uses the default stripe size (8 MiB: eight chunks over the two nodes, sent and
fetched in parallel); "whole" the same job with a stripe size above the value (one node, one
request). Each runs with values through the socket ("tcp", as from another host) and through
the nodes' shared memory ("shared", the co-located path).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest

import pocketlib
from pocketlib.client.job import Job
from pocketlib.ticket import DEFAULT_STRIPE_SIZE

pytestmark = pytest.mark.bench

MiB = 1024 * 1024
SIZE = 64 * MiB
STRIPES = {"striped": DEFAULT_STRIPE_SIZE, "whole": 2 * SIZE}


@pytest.fixture(scope="module")
def cluster() -> Iterator[pocketlib.LocalCluster]:
    with pocketlib.LocalCluster(node_capacity="512MiB", autoscale=False) as c:
        yield c


@pytest.fixture(scope="module")
def registered(cluster: pocketlib.LocalCluster) -> Iterator[Job]:
    client = cluster.client()
    job = client.register_job("bench-stripes", pocketlib.JobHints(capacity="1000MiB"))
    weights = job.ticket.maps[-1].weights
    assert len(weights) == 2, weights
    try:
        yield job
    finally:
        job.deregister()
        client.close()


@pytest.fixture(params=["tcp", "shared"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1" if request.param == "shared" else "0")
    return str(request.param)


def _job(registered: Job, mode: str) -> Job:
    """A client of its own (arenas are probed per client, after ``path`` set the env)."""
    ticket = dataclasses.replace(registered.ticket, stripe_size=STRIPES[mode])
    return pocketlib.attach(ticket)


@pytest.fixture(scope="module")
def value() -> bytes:
    return os.urandom(SIZE)


@pytest.mark.parametrize("mode", list(STRIPES))
def test_get(benchmark: Any, registered: Job, path: str, mode: str, value: bytes) -> None:
    with _job(registered, mode) as job:
        key = f"get/{mode}"
        job.put(key, value)
        assert job.stat(key).striped == (mode == "striped")
        benchmark.group = f"64 MiB GET, {path}"
        benchmark.name = f"GET {mode} {path}"
        result = benchmark.pedantic(job.get, (key,), rounds=15, warmup_rounds=2)
        assert result == value
        job.delete(key)


@pytest.mark.parametrize("mode", list(STRIPES))
def test_get_into(benchmark: Any, registered: Job, path: str, mode: str, value: bytes) -> None:
    """GET into a buffer the caller reuses: no allocation of 64 MiB per read."""
    with _job(registered, mode) as job:
        key = f"get-into/{mode}"
        job.put(key, value)
        buf = bytearray(SIZE)
        benchmark.group = f"64 MiB GET into a buffer, {path}"
        benchmark.name = f"GET_INTO {mode} {path}"
        assert benchmark.pedantic(job.get_into, (key, buf), rounds=15, warmup_rounds=2) == SIZE
        assert buf == value
        job.delete(key)


@pytest.mark.parametrize("mode", list(STRIPES))
def test_put(benchmark: Any, registered: Job, path: str, mode: str, value: bytes) -> None:
    with _job(registered, mode) as job:
        key = f"put/{mode}"
        benchmark.group = f"64 MiB PUT, {path}"
        benchmark.name = f"PUT {mode} {path}"
        benchmark.pedantic(job.put, (key, value), rounds=15, warmup_rounds=2)
        assert job.stat(key).striped == (mode == "striped")
        job.delete(key)
