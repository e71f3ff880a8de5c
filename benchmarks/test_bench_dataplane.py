"""pytest-benchmark: pocketlib and Redis GET/PUT side by side, one group per value size.

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
