"""pytest-benchmark: batches of small values, pocketlib's ``put_many`` / ``get_many`` beside
Redis's MSET / MGET, one group per batch shape (keys x value size).

A batch is what a shuffle of many small records or a metadata fan-out does: per-key costs
(framing, index look-ups, one Python object per value) dominate, not bytes. Both systems run on
127.0.0.1, one DRAM node and one redis-server started for the session and stopped by PID.

Skipped by the default test run. Run it with::

    python -m pytest benchmarks/test_bench_batch.py -m bench --benchmark-only \\
        -p no:cacheprovider --benchmark-columns=median,iqr
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import pocketlib
from pocketlib.bench.redis_peer import RedisServer
from pocketlib.control.processes import NodeProcess

pytestmark = pytest.mark.bench

SHAPES = {"8 x 1 KiB": (8, 1024), "100 x 1 KiB": (100, 1024), "1000 x 100 B": (1000, 100),
          "1000 x 1 KiB": (1000, 1024), "100 x 16 KiB": (100, 16 * 1024)}  # fmt: skip


@pytest.fixture(scope="session")
def pocket_job() -> Iterator[Any]:
    with NodeProcess("dram", "1GiB") as node:
        job = pocketlib.connect([str(node.address)], job="pytest-bench-batch")
        try:
            yield job
        finally:
            job.purge()
            job.close()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[Any]:
    with RedisServer() as server:
        client = server.client(socket_timeout=60)
        try:
            yield client
        finally:
            client.close()


def _items(system: str, shape: str) -> dict[str, bytes]:
    n, size = SHAPES[shape]
    return {f"bench/batch/{system}/{shape}/{i}": os.urandom(size) for i in range(n)}


@pytest.mark.parametrize("system", ["pocket", "redis"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_put_many(benchmark: Any, system: str, shape: str, request: pytest.FixtureRequest) -> None:
    items = _items(system, shape)
    if system == "redis":
        r = request.getfixturevalue("redis_client")
        benchmark.group, benchmark.name = f"PUT_MANY {shape}", f"redis MSET {shape}"
        benchmark(r.mset, items)
        assert r.mget(list(items)) == list(items.values())
    else:
        job = request.getfixturevalue("pocket_job")
        benchmark.group, benchmark.name = f"PUT_MANY {shape}", f"pocket put_many {shape}"
        benchmark(job.put_many, items)
        assert job.get_many(list(items)) == items


@pytest.mark.parametrize("system", ["pocket", "redis"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_get_many(benchmark: Any, system: str, shape: str, request: pytest.FixtureRequest) -> None:
    items = _items(system, shape)
    keys = list(items)
    if system == "redis":
        r = request.getfixturevalue("redis_client")
        r.mset(items)
        benchmark.group, benchmark.name = f"GET_MANY {shape}", f"redis MGET {shape}"
        assert benchmark(r.mget, keys) == list(items.values())
    else:
        job = request.getfixturevalue("pocket_job")
        job.put_many(items)
        benchmark.group, benchmark.name = f"GET_MANY {shape}", f"pocket get_many {shape}"
        assert benchmark(job.get_many, keys) == items
