"""pytest-benchmark: a client on the node's host, through shared memory and through TCP, next to
Redis; one group per value size.

Systems (all on 127.0.0.1, one DRAM node and one redis-server for the session):

- ``pocket-shm``: a client that mapped the node's arena, with the library's own choice of path
  per size (what a co-located client gets: PUT through shared memory from
  ``pocketlib.client.base.SHARED_PUT_MIN``, GET answered inline up to the node's
  ``pocketlib.node.shared.INLINE_LIMIT`` and leased above);
- ``pocket-shm-always`` (PUT only): the same client with the shared-memory PUT at every size
  (SHM_RESERVE, a copy into the arena, SHM_COMMIT), to see where that path starts to win;
- ``pocket-tcp``: a client that did not map the arena (``POCKET_SHARED_MEMORY=0`` when it
  first asked the node), as a client on another host;
- ``redis``: redis-py (hiredis) against redis-server.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_colocated.py -m bench --benchmark-only \\
        -p no:cacheprovider --benchmark-columns=median,iqr,ops

Compare medians within a group. pytest-benchmark runs one benchmark after the other, so on a
shared, noisy machine the systems are not interleaved as ``pocket bench`` interleaves them:
repeat the run before trusting a difference of less than about 20%.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pocketlib
import pocketlib.client.base
from pocketlib.bench.redis_peer import RedisServer
from pocketlib.bench.tier_env import environment
from pocketlib.control.processes import NodeProcess

pytestmark = pytest.mark.bench

KiB, MiB = 1024, 1024 * 1024
SIZES = {
    "1 KiB": 1 * KiB,
    "64 KiB": 64 * KiB,
    "256 KiB": 256 * KiB,
    "1 MiB": 1 * MiB,
    "16 MiB": 16 * MiB,
}
JOB = "pytest-bench-colocated"  # one job per client: purging one closes it on the node


@pytest.fixture(scope="session")
def pocket_node() -> Iterator[NodeProcess]:
    with NodeProcess("dram", "1GiB") as node:
        yield node


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _job(address: str, *, shared: bool) -> Any:
    """A job handle whose client maps the node's arena (``shared``) or never does: the client
    decides once per node, on its first request that needs the arena."""
    with environment({"POCKET_SHARED_MEMORY": "1" if shared else "0"}):
        job = pocketlib.connect([address], job=f"{JOB}-{'shm' if shared else 'tcp'}")
        job.client.arena(address)
    return job


@pytest.fixture(scope="session")
def shm_job(pocket_node: NodeProcess) -> Iterator[Any]:
    address = str(pocket_node.address)
    job = _job(address, shared=True)
    try:
        if job.client.arena(address) is None:
            pytest.skip("the node's arena cannot be mapped here (no /dev/shm file to share)")
        yield job
    finally:
        job.purge()
        job.close()


@pytest.fixture(scope="session")
def tcp_job(pocket_node: NodeProcess) -> Iterator[Any]:
    address = str(pocket_node.address)
    job = _job(address, shared=False)
    try:
        assert job.client.arena(address) is None
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


@pytest.fixture
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], tuple[Any, Any]]:
    """(put, get) of a system, by name."""

    def pick(system: str) -> tuple[Any, Any]:
        if system == "redis":
            r = request.getfixturevalue("redis_client")
            return r.set, r.get
        if system == "pocket-tcp":
            job = request.getfixturevalue("tcp_job")
            return job.put, job.get
        job = request.getfixturevalue("shm_job")
        if system == "pocket-shm-always":
            monkeypatch.setattr(pocketlib.client.base, "SHARED_PUT_MIN", 0)
        return job.put, job.get

    return pick


@pytest.mark.parametrize("system", ["pocket-shm", "pocket-tcp", "redis"])
@pytest.mark.parametrize("size", list(SIZES))
def test_get(
    benchmark: Any, system: str, size: str, store: Callable[[str], tuple[Any, Any]],
    values: dict[str, bytes],
) -> None:  # fmt: skip
    put, get = store(system)
    key = f"bench/colo/get/{system}/{size}"
    put(key, values[size])
    benchmark.group = f"GET {size}"
    benchmark.name = f"{system} GET {size}"
    result = benchmark(get, key)
    assert len(result) == SIZES[size]


@pytest.mark.parametrize("system", ["pocket-shm", "pocket-shm-always", "pocket-tcp", "redis"])
@pytest.mark.parametrize("size", list(SIZES))
def test_put(
    benchmark: Any, system: str, size: str, store: Callable[[str], tuple[Any, Any]],
    values: dict[str, bytes],
) -> None:  # fmt: skip
    put, get = store(system)
    key = f"bench/colo/put/{system}/{size}"
    benchmark.group = f"PUT {size}"
    benchmark.name = f"{system} PUT {size}"
    benchmark(put, key, values[size])
    assert get(key) == values[size]


#: Keys per batch read in ``test_get_many``.
MANY = 8


@pytest.mark.parametrize("system", ["pocket-shm", "pocket-shm-loop", "pocket-tcp", "redis"])
@pytest.mark.parametrize("size", ["1 KiB", "256 KiB", "1 MiB", "16 MiB"])
def test_get_many(
    benchmark: Any, system: str, size: str, request: pytest.FixtureRequest,
    values: dict[str, bytes],
) -> None:  # fmt: skip
    """A batch of MANY values: ``get_many`` (MULTI_GET; from a co-located node the values
    above 64 KiB are copied out of the mapping), the same keys one ``get`` each on the
    co-located client, and Redis's MGET."""
    keys = [f"bench/colo/many/{system}/{size}/{i}" for i in range(MANY)]
    items = dict.fromkeys(keys, values[size])
    if system == "redis":
        r = request.getfixturevalue("redis_client")
        r.mset(items)
        read: Callable[[], list[Any]] = lambda: r.mget(keys)  # noqa: E731
    else:
        job = request.getfixturevalue("tcp_job" if system == "pocket-tcp" else "shm_job")
        job.put_many(items)
        if system == "pocket-shm-loop":
            read = lambda: [job.get(k) for k in keys]  # noqa: E731
        else:
            read = lambda: list(job.get_many(keys).values())  # noqa: E731
    benchmark.group = f"GET_MANY {MANY} x {size}"
    benchmark.name = f"{system} GET_MANY {MANY} x {size}"
    result = benchmark(read)
    assert [len(v) for v in result] == [SIZES[size]] * MANY
