"""pytest-benchmark: routing one key, the slot table against scoring every node per key.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_routing.py -m bench --benchmark-only -p no:cacheprovider

Pure CPU: no node or server is started.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pocketlib.routing import VersionedRouter, WeightedRendezvous, WeightMap
from pocketlib.routing.rendezvous import _prepare, _score_all

# Warm-up on: without it the first benchmark of the session measured 0.33 µs against 0.19 µs
# for the same lookup later on (calibration of the first one runs on a cold interpreter).
pytestmark = [pytest.mark.bench, pytest.mark.benchmark(warmup=True)]

KEY = b"job-7/map-3/part-41"
# Keys spread over the slots, so that warming touches the slots a real job would.
WARM_KEYS = [f"job-7/map-{i % 97}/part-{i}".encode() for i in range(100_000)]


def weights(n: int, seed: int = 64) -> dict[str, float]:
    """``n`` nodes with weights from 0.5 to 2 (unequal: the logarithm is not skipped)."""
    rng = random.Random(seed)
    return {f"10.0.0.{i}:7070": rng.uniform(0.5, 2.0) for i in range(n)}


def warmed(w: dict[str, float]) -> WeightedRendezvous:
    router = WeightedRendezvous(w)
    for key in WARM_KEYS:
        router.node_for(key)
    return router


@pytest.mark.parametrize("n", [64, 2])
def test_slot_table_warm(benchmark: Any, n: int) -> None:
    router = warmed(weights(n))
    benchmark.group = f"route one key, {n} weighted nodes"
    benchmark.name = f"slot table, warm ({n} nodes)"
    assert benchmark(router.node_for, KEY) in router.weights


@pytest.mark.parametrize("n", [64, 2])
def test_per_key_scoring(benchmark: Any, n: int) -> None:
    """The former algorithm: every node scored for every key."""
    nodes = _prepare(weights(n))
    benchmark.group = f"route one key, {n} weighted nodes"
    benchmark.name = f"per-key scoring ({n} nodes)"
    assert benchmark(_score_all, nodes, KEY) in {name for name, _, _ in nodes}


def test_slot_table_cold(benchmark: Any) -> None:
    """The first lookup of a slot: one full rendezvous of the slot, then the store."""
    w = weights(64)

    def fresh() -> tuple[tuple[WeightedRendezvous, bytes], dict[str, Any]]:
        return (WeightedRendezvous(w), KEY), {}

    benchmark.group = "route one key, 64 weighted nodes"
    benchmark.name = "slot table, cold first touch (64 nodes)"
    result = benchmark.pedantic(
        lambda router, key: router.node_for(key), setup=fresh, rounds=3000, warmup_rounds=50
    )
    assert result in w


@pytest.fixture(scope="module")
def three_versions() -> VersionedRouter:
    """Three 64-node versions (a node joins, then another leaves), warmed."""
    v1 = weights(64)
    v2 = {**v1, "10.0.1.0:7070": 1.0}
    v3 = {node: wt for node, wt in v2.items() if node != "10.0.0.5:7070"}
    router = VersionedRouter([WeightMap(1, v1), WeightMap(2, v2), WeightMap(3, v3)])
    for key in WARM_KEYS:
        router.read_nodes(key)
    return router


def test_read_nodes_three_versions(benchmark: Any, three_versions: VersionedRouter) -> None:
    benchmark.group = "versioned router, 3 versions of 64 nodes"
    benchmark.name = "read_nodes (3 versions, warm)"
    nodes = benchmark(three_versions.read_nodes, KEY)
    assert nodes[0] == three_versions.write_node(KEY)


def test_write_node_three_versions(benchmark: Any, three_versions: VersionedRouter) -> None:
    benchmark.group = "versioned router, 3 versions of 64 nodes"
    benchmark.name = "write_node (3 versions, warm)"
    assert benchmark(three_versions.write_node, KEY) in three_versions.nodes
