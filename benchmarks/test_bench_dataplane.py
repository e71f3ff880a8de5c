"""pytest-benchmark: pocketlib and Redis side by side: GET/PUT, one group per value size, and
batches (put_many / get_many beside MSET / MGET), one group per batch shape.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks -m bench --benchmark-only -p no:cacheprovider

A pocketlib node and a redis-server are started once for the session and stopped by PID.
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

SIZES = {"1 KiB": 1 << 10, "16 MiB": 16 << 20}
#: Batches (keys x value size) for put_many / get_many beside MSET / MGET: a shuffle of many
#: small records or a metadata fan-out, where per-key costs dominate, not bytes.
SHAPES = {"8 x 1 KiB": (8, 1024), "100 x 1 KiB": (100, 1024), "1000 x 100 B": (1000, 100),
          "1000 x 1 KiB": (1000, 1024), "100 x 16 KiB": (100, 16 * 1024)}  # fmt: skip


@pytest.fixture(scope="session")
def pocket_node() -> Iterator[NodeProcess]:
    with NodeProcess("dram", "1GiB") as node:
        yield node


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def pocket_job(pocket_node: NodeProcess) -> Iterator[Any]:
    job = pocketlib.connect([str(pocket_node.address)], job="pytest-bench")
    try:
        yield job
    finally:
        job.purge()
        job.close()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client(socket_timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def values() -> dict[str, bytes]:
    return {label: os.urandom(n) for label, n in SIZES.items()}


def _store(system: str, pocket_job: Any, redis_client: Any) -> tuple[Any, Any]:
    """(put, get) of one system."""
    if system == "pocket":
        return pocket_job.put, pocket_job.get
    return redis_client.set, redis_client.get


@pytest.mark.parametrize("system", ["pocket", "redis"])
@pytest.mark.parametrize("size", list(SIZES))
def test_get(
    benchmark: Any, system: str, size: str, pocket_job: Any, redis_client: Any,
    values: dict[str, bytes],
) -> None:  # fmt: skip
    put, get = _store(system, pocket_job, redis_client)
    key = f"bench/get/{size}"
    put(key, values[size])
    benchmark.group = size
    benchmark.name = f"{system} GET {size}"
    result = benchmark(get, key)
    assert len(result) == SIZES[size]


@pytest.mark.parametrize("system", ["pocket", "redis"])
@pytest.mark.parametrize("size", list(SIZES))
def test_put(
    benchmark: Any, system: str, size: str, pocket_job: Any, redis_client: Any,
    values: dict[str, bytes],
) -> None:  # fmt: skip
    put, get = _store(system, pocket_job, redis_client)
    key = f"bench/put/{size}"
    benchmark.group = size
    benchmark.name = f"{system} PUT {size}"
    benchmark(put, key, values[size])
    assert len(get(key)) == SIZES[size]


def _batch_items(system: str, shape: str) -> dict[str, bytes]:
    n, size = SHAPES[shape]
    return {f"bench/batch/{system}/{shape}/{i}": os.urandom(size) for i in range(n)}


@pytest.mark.parametrize("system", ["pocket", "redis"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("op", ["PUT_MANY", "GET_MANY"])
def test_batch(
    benchmark: Any, op: str, system: str, shape: str, pocket_job: Any, redis_client: Any
) -> None:
    """put_many / get_many of one batch, or Redis's MSET / MGET of the same items."""
    items = _batch_items(system, shape)
    keys = list(items)
    if system == "redis":
        put, get = redis_client.mset, lambda: dict(zip(keys, redis_client.mget(keys), strict=True))
        name = "MSET" if op == "PUT_MANY" else "MGET"
    else:
        put, get = pocket_job.put_many, lambda: pocket_job.get_many(keys)
        name = op.lower()
    benchmark.group, benchmark.name = f"{op} {shape}", f"{system} {name} {shape}"
    if op == "PUT_MANY":
        benchmark(put, items)
    else:
        put(items)
        benchmark(get)
    assert get() == items
