"""The allocation and autoscaling policies (pure functions: no nodes needed)."""

from __future__ import annotations

import math

import pytest

from pocketlib.config import FUNCTION_THROUGHPUT, JobHints
from pocketlib.errors import CapacityError, ConfigError
from pocketlib.routing.allocation import (
    DEFAULT_TIERS,
    NodeLoad,
    TierSpec,
    choose_tier,
    demand_for,
    pack,
)
from pocketlib.routing.autoscale import Band, decide, utilization

GB = 1000**3
SPEC = TierSpec("dram", node_capacity=10 * GB, node_bandwidth=1 * GB, price_per_hour=1.0)


def test_no_hints_get_two_nodes_of_throughput() -> None:
    d = demand_for(JobHints(), SPEC)
    assert d.throughput == 2 * GB
    assert d.capacity == 20 * GB  # the capacity of the two nodes that throughput occupies
    assert d.nodes == pytest.approx(2.0)


def test_concurrency_derives_throughput_from_the_function_rate() -> None:
    d = demand_for(JobHints(max_concurrency=40), SPEC)
    assert d.throughput == 40 * FUNCTION_THROUGHPUT
    assert d.bound == "throughput"
    # An explicit throughput wins over the one derived from concurrency.
    assert demand_for(JobHints(max_concurrency=40, peak_throughput=5), SPEC).throughput == 5


def test_capacity_only_derives_throughput_and_is_capacity_bound() -> None:
    d = demand_for(JobHints(capacity=35 * GB), SPEC)
    assert d.capacity == 35 * GB
    assert d.throughput == math.ceil(3.5 * GB)
    d = demand_for(JobHints(capacity=35 * GB, peak_throughput=1 * GB), SPEC)
    assert d.bound == "capacity"
    assert d.nodes == pytest.approx(3.5)


@pytest.mark.parametrize(
    ("hints", "tier"),
    [
        (JobHints(capacity="100GB", peak_throughput="4GB/s"), "dram"),  # latency-sensitive
        (JobHints(latency_sensitive=False, capacity="100GB", peak_throughput="4GB/s"), "dram"),
        (JobHints(latency_sensitive=False, capacity="5TB", peak_throughput="2GB/s"), "nvme"),
        (JobHints(latency_sensitive=False, capacity="10TB", peak_throughput="1GB/s"), "hdd"),
    ],
)
def test_tier_choice_is_the_cheapest_that_serves(hints: JobHints, tier: str) -> None:
    spec, demand = choose_tier(hints, DEFAULT_TIERS)
    assert spec.name == tier == demand.tier
    cost = demand.nodes * spec.price_per_hour
    for other in DEFAULT_TIERS.values():
        if not hints.latency_sensitive:
            assert cost <= demand_for(hints, other).nodes * other.price_per_hour


def test_latency_sensitive_without_dram_is_refused() -> None:
    with pytest.raises(ConfigError, match="DRAM"):
        choose_tier(JobHints(), {"hdd": DEFAULT_TIERS["hdd"]})
    with pytest.raises(ConfigError):
        choose_tier(JobHints(latency_sensitive=False), {})


def node(name: str, at: float = 0.0, **kw: float) -> NodeLoad:
    """A 10 GB, 1 GB/s node with ``at`` of both resources already allocated."""
    return NodeLoad(
        name, "dram", 10 * GB, 1 * GB,
        alloc_capacity=int(at * 10 * GB), alloc_throughput=int(at * GB), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_pack_fills_the_fullest_node_first() -> None:
    demand = demand_for(JobHints(peak_throughput=GB // 2, capacity=5 * GB), SPEC)
    placement = pack(demand, [node("empty"), node("half", 0.5), node("full", 1.0)], SPEC)
    assert placement.shares == {"half": pytest.approx(1.0)}  # fits in the fullest that fits
    assert placement.new_nodes == []


def test_pack_spills_over_nodes_and_asks_for_new_ones() -> None:
    demand = demand_for(JobHints(peak_throughput=3 * GB, capacity=3 * GB), SPEC)
    placement = pack(demand, [node("a", 0.5), node("b", 0.75)], SPEC)
    # b has 0.25 GB/s free = 1/12 of the job, a 0.5 GB/s = 1/6; the rest needs new nodes.
    assert placement.shares == {"b": pytest.approx(1 / 12), "a": pytest.approx(1 / 6)}
    assert len(placement.new_nodes) == 3
    assert placement.placed + sum(placement.new_nodes) == pytest.approx(1.0)
    assert max(placement.new_nodes) <= 1 / 3 + 1e-9  # a new node serves 1 GB/s of 3


def test_pack_respects_both_resources() -> None:
    # Throughput is free on the node but its capacity is almost gone.
    nearly_full = NodeLoad("c", "dram", 10 * GB, GB, alloc_capacity=9 * GB, alloc_throughput=0)
    demand = demand_for(JobHints(peak_throughput=GB // 10, capacity=4 * GB), SPEC)
    placement = pack(demand, [nearly_full], SPEC)
    assert placement.shares["c"] == pytest.approx(0.25)  # 1 GB of the 4 GB
    assert sum(placement.new_nodes) == pytest.approx(0.75)


def test_pack_refuses_what_the_fleet_limit_cannot_hold() -> None:
    demand = demand_for(JobHints(capacity=100 * GB), SPEC)
    with pytest.raises(CapacityError, match="10 more node"):
        pack(demand, [], SPEC, max_new_nodes=3)


BAND = Band(0.6, 0.8)


def run(active: list[NodeLoad], draining: list[NodeLoad] = (), starting: int = 0,  # type: ignore[assignment]
        min_nodes: int = 1, max_nodes: int = 10) -> list[tuple[str, str | None]]:  # fmt: skip
    out = decide({"dram": active}, {"dram": list(draining)}, {"dram": starting}, band=BAND,
                 min_nodes={"dram": min_nodes}, max_nodes=max_nodes)  # fmt: skip
    return [(d.action, d.node) for d in out]


def test_a_hot_resource_adds_a_node() -> None:
    hot = [node("a", used=9 * GB), node("b", used=8 * GB)]  # capacity at 85%
    assert run(hot) == [("add", None)]
    assert run(hot, starting=1) == []  # one at a time
    assert run(hot, max_nodes=2) == []  # the fleet is at its maximum
    net_hot = [node("a", net=0.9 * GB)]
    (decision,) = decide({"dram": net_hot}, {}, {}, band=BAND, min_nodes={}, max_nodes=5)
    assert "net at 90%" in decision.reason
    assert decision.figures["net"] == pytest.approx(0.9)


def test_a_cold_tier_drains_its_emptiest_node_down_to_the_minimum() -> None:
    cold = [node("a", used=GB), node("b", used=0), node("c", used=2 * GB)]
    assert run(cold) == [("drain", "b")]
    assert run(cold[:2], min_nodes=2) == []
    assert run(cold[:1]) == []


def test_no_drain_if_the_rest_would_run_hot() -> None:
    # 55% each on two nodes: cold, but one node alone would carry 110%.
    warm = [node("a", net=0.55 * GB), node("b", net=0.55 * GB)]
    assert run(warm) == []


def test_drained_nodes_stop_once_empty() -> None:
    busy = [node("a", used=5 * GB)]
    gone = node("d", used=0)
    holding = node("e", used=10, jobs=1)
    assert ("stop", "d") in run(busy, draining=[gone, holding])
    assert ("stop", "e") not in run(busy, draining=[gone, holding])


def test_below_minimum_adds_whatever_the_load() -> None:
    assert run([], min_nodes=2) == [("add", None)]
    assert run([], min_nodes=2, starting=2) == []


def test_utilization_without_a_node_spreads_its_load() -> None:
    a, b = node("a", net=0.2 * GB, cpu=0.5), node("b", net=0.4 * GB, cpu=0.1)
    assert utilization([a, b])["net"] == pytest.approx(0.3)
    assert utilization([a, b], without=a)["net"] == pytest.approx(0.6)
    assert utilization([a, b], without=a)["cpu"] == pytest.approx(0.6)


def test_band_is_validated() -> None:
    with pytest.raises(ConfigError):
        Band(0.8, 0.6)
