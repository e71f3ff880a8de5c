"""Key placement by weighted rendezvous hashing (slot table, versioned weight maps), alone and
over two real nodes."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.routing import SLOTS, VersionedRouter, WeightedRendezvous, WeightMap, slot_of
from pocketlib.routing.rendezvous import _prepare, _score_all, _slot_input

KEYS = [f"job/map-{i}/part-{i % 97}".encode() for i in range(20_000)]


def placement(router: WeightedRendezvous) -> dict[bytes, str]:
    return {k: router.node_for(k) for k in KEYS}


def test_deterministic_across_instances() -> None:
    a = WeightedRendezvous({"n1:1": 1.0, "n2:2": 2.0, "n3:3": 1.0})
    b = WeightedRendezvous({"n3:3": 1.0, "n1:1": 1.0, "n2:2": 2.0})  # another insertion order
    assert placement(a) == placement(b)
    assert a.nodes == b.nodes == ["n1:1", "n2:2", "n3:3"]


def test_deterministic_across_processes() -> None:
    code = (
        "from pocketlib.routing import WeightedRendezvous\n"
        "r = WeightedRendezvous({'a': 1.0, 'b': 2.0, 'c': 1.0})\n"
        "print(''.join(r.node_for(f'key-{i}'.encode()) for i in range(300)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()  # fmt: skip
    r = WeightedRendezvous({"a": 1.0, "b": 2.0, "c": 1.0})
    assert out == "".join(r.node_for(f"key-{i}".encode()) for i in range(300))


def test_single_node_takes_every_key() -> None:
    r = WeightedRendezvous({"only": 3.0})
    assert {r.node_for(k) for k in KEYS[:100]} == {"only"}


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 1.0, "b": 2.0, "c": 1.0},
        {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0},
        {"x": 0.5, "y": 3.5},
    ],
)
def test_shares_follow_weights(weights: dict[str, float]) -> None:
    counts = Counter(placement(WeightedRendezvous(weights)).values())
    total = sum(weights.values())
    for node, w in weights.items():
        share = counts[node] / len(KEYS)
        assert abs(share - w / total) <= 0.05, (node, share, w / total)


@pytest.mark.parametrize(
    ("before", "joiner", "weight"),
    [
        ({"a": 1.0, "b": 1.0, "c": 1.0}, "d", 1.0),  # equal weights before and after
        ({"a": 1.0, "b": 2.0, "c": 1.0}, "d", 1.0),  # weighted before and after
        ({"a": 1.0, "b": 1.0}, "c", 2.0),  # equal weights before, weighted after
    ],
)
def test_a_joining_node_takes_keys_only_for_itself(
    before: dict[str, float], joiner: str, weight: float
) -> None:
    old = placement(WeightedRendezvous(before))
    new = placement(WeightedRendezvous({**before, joiner: weight}))
    moved = [k for k in KEYS if old[k] != new[k]]
    assert all(new[k] == joiner for k in moved), "keys moved between nodes that stayed"
    expected = weight / (sum(before.values()) + weight)
    assert abs(len(moved) / len(KEYS) - expected) <= 0.03


def test_a_joining_node_moves_about_one_in_n_plus_one() -> None:
    for n in (1, 2, 4, 7):
        nodes = {f"node-{i}": 1.0 for i in range(n)}
        old = placement(WeightedRendezvous(nodes))
        new = placement(WeightedRendezvous({**nodes, "new": 1.0}))
        moved = sum(old[k] != new[k] for k in KEYS) / len(KEYS)
        assert abs(moved - 1 / (n + 1)) <= 0.03, (n, moved)


@pytest.mark.parametrize("leaver", ["a", "b", "c"])
def test_a_leaving_node_moves_only_its_own_keys(leaver: str) -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 1.0}
    old = placement(WeightedRendezvous(weights))
    new = placement(WeightedRendezvous({n: w for n, w in weights.items() if n != leaver}))
    for k in KEYS:
        if old[k] != leaver:
            assert new[k] == old[k]
        else:
            assert new[k] != leaver
    # The leaver's keys spread over the others in proportion to their weights.
    spread = Counter(new[k] for k in KEYS if old[k] == leaver)
    rest = {n: w for n, w in weights.items() if n != leaver}
    for node, w in rest.items():
        assert abs(spread[node] / sum(spread.values()) - w / sum(rest.values())) <= 0.05


def test_changing_a_weight_moves_keys_only_towards_the_heavier_node() -> None:
    old = placement(WeightedRendezvous({"a": 1.0, "b": 1.0, "c": 1.0}))
    new = placement(WeightedRendezvous({"a": 1.0, "b": 1.0, "c": 3.0}))
    assert all(new[k] == "c" for k in KEYS if old[k] != new[k])


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": 0.0}, {"a": -1.0}, {"a": 1.0, "b": math.nan}, {"a": math.inf}, {"a": 1, "b": 0}],
)
def test_invalid_weights_raise(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        WeightedRendezvous(weights)


def test_uniform() -> None:
    r = WeightedRendezvous.uniform(["b:1", "a:1"])
    assert r.weights == {"a:1": 1.0, "b:1": 1.0}
    assert r.nodes == ["a:1", "b:1"]


# -- the slot table ----------------------------------------------------------------------------

MANY_KEYS = [f"many/{i}".encode() for i in range(200_000)]


def random_weights(n: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"10.0.{i // 256}.{i % 256}:7070": rng.uniform(0.2, 5.0) for i in range(n)}


WEIGHTS_64 = random_weights(64, seed=20181008)


def share_tolerance(p: float, n_keys: int) -> float:
    """Five standard deviations of a node's share: the slots it wins (binomial over SLOTS),
    then the keys that land in them (binomial over ``n_keys``)."""
    return 5 * math.sqrt(p * (1 - p) * (1 / SLOTS + 1 / n_keys))


def assert_shares(counts: Mapping[str, int], weights: Mapping[str, float], n: int) -> None:
    total = sum(weights.values())
    assert set(counts) <= set(weights)
    for node, w in weights.items():
        p = w / total
        assert abs(counts.get(node, 0) / n - p) <= share_tolerance(p, n), (node, counts, p)


def slot_owners(router: WeightedRendezvous) -> list[str]:
    return [router.node_for_slot(s) for s in range(SLOTS)]


@pytest.mark.parametrize(
    "weights", [{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, WEIGHTS_64], ids=["1:2:3:4", "64-random"]
)
def test_shares_of_200k_keys_follow_unequal_weights(weights: dict[str, float]) -> None:
    router = WeightedRendezvous(weights)
    counts = Counter(router.node_for(k) for k in MANY_KEYS)
    assert_shares(counts, weights, len(MANY_KEYS))


def test_a_64_node_map_skewed_weights_share_in_proportion() -> None:
    # One node with a tenth of the load of the others, one with ten times.
    weights = dict.fromkeys((f"n{i}" for i in range(64)), 1.0) | {"n0": 0.1, "n1": 10.0}
    counts = Counter(slot_owners(WeightedRendezvous(weights)))
    assert_shares(counts, weights, SLOTS)
    assert counts["n1"] > 50 * counts["n0"]


def test_a_slot_owner_is_the_full_rendezvous_of_that_slot() -> None:
    router = WeightedRendezvous(WEIGHTS_64)
    nodes = _prepare(WEIGHTS_64)
    for key in MANY_KEYS[:3000]:
        expected = _score_all(nodes, _slot_input(slot_of(key)))
        assert router.node_for(key) == expected
    # ...and routing really is by slot: scoring the key itself gives another answer for most.
    differ = sum(router.node_for(k) != _score_all(nodes, k) for k in MANY_KEYS[:3000])
    assert differ > 2000


def test_equal_weights_use_the_same_rendezvous_as_any_weights() -> None:
    # The equal-weights shortcut (compare hashes, skip the logarithm) gives the same owners as
    # the weighted score.
    nodes = _prepare(dict.fromkeys("abcdefgh", 1.0))
    for slot in range(0, SLOTS, 7):
        data = _slot_input(slot)
        assert _score_all(nodes, data, equal=True) == _score_all(nodes, data, equal=False)


def test_a_warmed_table_answers_as_a_fresh_router() -> None:
    warmed = WeightedRendezvous(WEIGHTS_64)
    first = [warmed.node_for(k) for k in MANY_KEYS[:50_000]]  # fills most slots
    assert [warmed.node_for(k) for k in MANY_KEYS[:50_000]] == first  # served from the table
    fresh = WeightedRendezvous(dict(reversed(WEIGHTS_64.items())))
    assert [fresh.node_for_slot(slot_of(k)) for k in MANY_KEYS[:50_000]] == first
    assert slot_owners(warmed) == slot_owners(WeightedRendezvous(WEIGHTS_64))


def test_racing_threads_fill_the_table_with_the_same_answers() -> None:
    router = WeightedRendezvous(WEIGHTS_64)
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def fill() -> None:
        barrier.wait()
        results.append([router.node_for(k) for k in MANY_KEYS[:20_000]])

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    expected = [WeightedRendezvous(WEIGHTS_64).node_for(k) for k in MANY_KEYS[:20_000]]
    assert all(r == expected for r in results)


def test_a_joining_node_of_a_64_node_map_takes_only_its_share() -> None:
    old = WeightedRendezvous(WEIGHTS_64)
    joined = {**WEIGHTS_64, "joiner:7070": 3.0}
    new = WeightedRendezvous(joined)
    moved = 0
    for key in MANY_KEYS:
        before, after = old.node_for(key), new.node_for(key)
        if before != after:
            assert after == "joiner:7070", "a key moved between nodes that both stayed"
            moved += 1
    p = 3.0 / sum(joined.values())
    assert abs(moved / len(MANY_KEYS) - p) <= share_tolerance(p, len(MANY_KEYS))


def test_a_leaving_node_of_a_64_node_map_moves_only_its_keys() -> None:
    old = WeightedRendezvous(WEIGHTS_64)
    leaver = sorted(WEIGHTS_64)[17]
    new = WeightedRendezvous({n: w for n, w in WEIGHTS_64.items() if n != leaver})
    moved = 0
    for key in MANY_KEYS:
        before, after = old.node_for(key), new.node_for(key)
        assert after != leaver
        if before != leaver:
            assert after == before, "a key of a node that stayed moved"
        else:
            moved += 1
    p = WEIGHTS_64[leaver] / sum(WEIGHTS_64.values())
    assert abs(moved / len(MANY_KEYS) - p) <= share_tolerance(p, len(MANY_KEYS))


weight_maps = st.dictionaries(
    st.sampled_from([f"node-{i}" for i in range(12)]),
    st.floats(min_value=0.05, max_value=20.0),
    min_size=2,
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(weights=weight_maps)
def test_any_weight_map_shares_slots_by_weight(weights: dict[str, float]) -> None:
    counts = Counter(slot_owners(WeightedRendezvous(weights)))
    assert_shares(counts, weights, SLOTS)


@settings(max_examples=25, deadline=None)
@given(weights=weight_maps, joiner_weight=st.floats(min_value=0.05, max_value=20.0))
def test_any_weight_map_a_joiner_takes_slots_only_for_itself(
    weights: dict[str, float], joiner_weight: float
) -> None:
    before = slot_owners(WeightedRendezvous(weights))
    after = slot_owners(WeightedRendezvous({**weights, "joiner": joiner_weight}))
    moved = [s for s in range(SLOTS) if before[s] != after[s]]
    assert all(after[s] == "joiner" for s in moved)
    p = joiner_weight / (sum(weights.values()) + joiner_weight)
    assert abs(len(moved) / SLOTS - p) <= share_tolerance(p, SLOTS)


@settings(max_examples=25, deadline=None)
@given(weights=weight_maps, data=st.data())
def test_any_weight_map_a_leaver_gives_up_only_its_slots(
    weights: dict[str, float], data: st.DataObject
) -> None:
    leaver = data.draw(st.sampled_from(sorted(weights)))
    before = slot_owners(WeightedRendezvous(weights))
    after = slot_owners(WeightedRendezvous({n: w for n, w in weights.items() if n != leaver}))
    for s in range(SLOTS):
        assert after[s] == before[s] if before[s] != leaver else after[s] != leaver


def test_placement_is_pinned() -> None:
    """Owners of a few keys, fixed: a change here moves stored keys between client versions
    (a reader on another version would miss them), so it must be deliberate."""
    weighted = WeightedRendezvous({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    uniform = WeightedRendezvous.uniform(["a", "b", "c"])
    keys = [f"golden-{i}".encode() for i in range(40)]
    assert [slot_of(k) for k in keys[:5]] == [9104, 14285, 7908, 4232, 3605]
    assert "".join(map(weighted.node_for, keys)) == "addbdcdccdbcbbbcbcccdcdccbcacdbdcacbdbdd"
    assert "".join(map(uniform.node_for, keys)) == "aacbbabccaacbabcbbccbccccbcaccbbcacbbbca"


def test_a_64_node_map_is_deterministic_across_processes() -> None:
    code = (
        "import json, sys\n"
        "from pocketlib.routing import WeightedRendezvous, VersionedRouter, WeightMap\n"
        "w = json.loads(sys.argv[1])\n"
        "r = WeightedRendezvous(w)\n"
        "v = VersionedRouter([WeightMap(1, dict(list(w.items())[:40])), WeightMap(2, w)])\n"
        "keys = [f'proc/{i}'.encode() for i in range(2000)]\n"
        "print(json.dumps([[r.node_for(k) for k in keys], [v.read_nodes(k) for k in keys]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(WEIGHTS_64)], capture_output=True, text=True,
        check=True, env={"PYTHONHASHSEED": "4242", "PATH": ""},
    ).stdout  # fmt: skip
    r = WeightedRendezvous(WEIGHTS_64)
    v = VersionedRouter(
        [WeightMap(1, dict(list(WEIGHTS_64.items())[:40])), WeightMap(2, WEIGHTS_64)]
    )
    keys = [f"proc/{i}".encode() for i in range(2000)]
    assert json.loads(out) == [[r.node_for(k) for k in keys], [v.read_nodes(k) for k in keys]]


def test_node_for_slot_checks_its_range() -> None:
    router = WeightedRendezvous({"a": 1.0, "b": 1.0})
    assert router.node_for_slot(SLOTS - 1) in ("a", "b")
    for slot in (-1, SLOTS):
        with pytest.raises(ValueError, match="slot"):
            router.node_for_slot(slot)


def test_to_dict_and_repr() -> None:
    router = WeightedRendezvous({"b": 2, "a": 1.0})
    assert router.to_dict() == {"a": 1.0, "b": 2.0}
    assert list(router.to_dict()) == ["a", "b"]
    assert "WeightedRendezvous" in repr(router)


# -- weight maps -------------------------------------------------------------------------------


def test_a_weight_map_is_normalised_and_sorted() -> None:
    m = WeightMap(3, {"c": 2.0, "a": 1, "b": 1.0})
    assert m.version == 3
    assert dict(m.weights) == {"a": 0.25, "b": 0.25, "c": 0.5}
    assert m.nodes == ["a", "b", "c"]
    with pytest.raises(TypeError):
        m.weights["a"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.version = 4  # type: ignore[misc]


def test_huge_weights_normalise_without_overflow() -> None:
    m = WeightMap(1, {"a": 1e308, "b": 1e308, "c": 1.5e308, "d": 1.5e308})
    assert dict(m.weights) == pytest.approx({"a": 0.2, "b": 0.2, "c": 0.3, "d": 0.3})


@settings(max_examples=200, deadline=None)
@given(
    weights=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.floats(min_value=1e-6, max_value=1e6),
        min_size=1,
        max_size=20,
    ),
    version=st.integers(min_value=1, max_value=2**40),
)
def test_any_weight_map_sums_to_one_and_survives_json(
    weights: dict[str, float], version: int
) -> None:
    m = WeightMap(version, weights)
    assert math.fsum(m.weights.values()) == pytest.approx(1.0, abs=1e-12)
    first = next(iter(weights))
    for node, w in weights.items():  # ratios are kept
        assert m.weights[node] / m.weights[first] == pytest.approx(w / weights[first])
    back = WeightMap.from_dict(json.loads(json.dumps(m.as_dict())))
    assert back == m
    assert list(back.weights.items()) == list(m.weights.items())  # bit for bit, same order
    assert hash(back) == hash(m)
    assert WeightMap(version, m.weights) == m  # normalising is idempotent


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({}, "at least one node"),
        ({"a": 0.0}, "positive"),
        ({"a": 1.0, "b": 0}, "positive"),
        ({"a": -1.0}, "positive"),
        ({"a": math.nan}, "positive"),
        ({"a": 1.0, "b": math.inf}, "positive"),
        ({"a": 1.0, "b": -math.inf}, "positive"),
        ({"a": True}, "number"),
        ({"a": "1"}, "number"),
        ({"": 1.0}, "node names"),
        ({1: 1.0}, "node names"),
        ({"a": 5e-324, "b": 1e300}, "too small"),
    ],
)
def test_invalid_weight_maps_raise(weights: dict[object, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WeightMap(1, weights)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1"])
def test_invalid_versions_raise(version: object) -> None:
    with pytest.raises(ValueError, match="version"):
        WeightMap(version, {"a": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data", [{}, {"version": 1}, {"weights": {"a": 1.0}}, {"version": 1, "weights": [1.0]}, []]
)
def test_malformed_weight_map_dicts_raise(data: object) -> None:
    with pytest.raises(ValueError, match="weights"):
        WeightMap.from_dict(data)  # type: ignore[arg-type]


def test_a_weight_maps_router_is_built_once() -> None:
    m = WeightMap(1, {"a": 1.0, "b": 3.0})
    assert m.router is m.router
    assert m.router.weights == {"a": 0.25, "b": 0.75}


# -- versioned routing -------------------------------------------------------------------------

V1 = WeightMap(1, {"a": 1.0, "b": 1.0, "c": 1.0})
V2 = WeightMap(2, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 2.0})  # d joins
V4 = WeightMap(4, {"a": 1.0, "c": 1.0, "d": 2.0, "e": 1.0})  # b dies, e replaces it


def test_writes_use_the_newest_map() -> None:
    router = VersionedRouter([V1, V2, V4])
    assert router.newest is V4
    assert all(router.write_node(k) == V4.router.node_for(k) for k in KEYS)
    assert {router.write_node(k) for k in KEYS} == {"a", "c", "d", "e"}


def test_reads_list_newest_first_and_older_nodes_only_when_they_differ() -> None:
    router = VersionedRouter([V1, V2, V4])
    lengths: Counter[int] = Counter()
    for k in KEYS:
        per_version = [V4.router.node_for(k), V2.router.node_for(k), V1.router.node_for(k)]
        nodes = router.read_nodes(k)
        assert nodes[0] == router.write_node(k)
        assert nodes == list(dict.fromkeys(per_version))  # distinct, newest first
        lengths[len(nodes)] += 1
    # Some keys never moved, some moved once, some twice (1 -> 2 -> 4).
    assert set(lengths) == {1, 2, 3}


def test_a_key_written_under_an_older_map_is_found() -> None:
    stored: dict[str, set[bytes]] = {}
    old = VersionedRouter([V1])
    for k in KEYS:
        stored.setdefault(old.write_node(k), set()).add(k)
    new = old.with_map(V2).with_map(V4)
    for k in KEYS:
        holders = [n for n in new.read_nodes(k) if k in stored.get(n, set())]
        assert len(holders) == 1


def test_with_map_returns_a_new_router() -> None:
    old = VersionedRouter([V1])
    new = old.with_map(V2)
    assert old.maps == (V1,)
    assert new.maps == (V1, V2)
    assert new.newest is V2
    assert new.nodes == ["a", "b", "c", "d"]
    assert new.with_map(V4).nodes == ["a", "b", "c", "d", "e"]  # b still read from
    with pytest.raises(ValueError, match="increase"):
        new.with_map(V1)


@pytest.mark.parametrize("maps", [[V2, V1], [V1, V1], [V1, V4, V2], [V1, WeightMap(1, {"z": 1})]])
def test_versions_out_of_order_raise(maps: list[WeightMap]) -> None:
    with pytest.raises(ValueError, match="increase"):
        VersionedRouter(maps)


def test_a_versioned_router_needs_a_map() -> None:
    with pytest.raises(ValueError, match="at least one"):
        VersionedRouter([])


def test_one_version_reads_one_node() -> None:
    router = VersionedRouter([V2])
    assert all(router.read_nodes(k) == [router.write_node(k)] for k in KEYS[:1000])
    assert "versions=[2]" in repr(router)


# -- over two real nodes -----------------------------------------------------------------------


def test_a_job_over_two_nodes(two_nodes: list[NodeProcess]) -> None:
    addresses = [str(n.address) for n in two_nodes]
    keys = [f"spread/{i:04d}" for i in range(300)]
    with pocketlib.connect(addresses, job="two-node-job") as job:
        try:
            job.put_many({k: k.encode() * 3 for k in keys[:150]})
            for k in keys[150:]:
                job.put(k, k.encode() * 3)
            stats = job.stats()
            per_node = {a: stats[a]["tier"]["objects_by_job"].get(job.name, 0) for a in addresses}
            assert all(n > 0 for n in per_node.values()), per_node
            assert sum(per_node.values()) == len(keys)
            for k in keys:
                assert job.get(k) == k.encode() * 3
            assert job.get_many(keys) == {k: k.encode() * 3 for k in keys}
            # list() merges both nodes' pages into one sorted stream.
            assert list(job.list("spread/", page_size=9)) == keys
            # Each key is stored on the node its router names, and only there.
            for address in addresses:
                with pocketlib.connect([address], job="two-node-job") as single:
                    on_node = set(single.list("spread/"))
                assert on_node == {k for k in keys if job.router.write_node(k.encode()) == address}
                assert len(on_node) == per_node[address]
            assert job.delete_prefix("spread/") == len(keys)
            assert list(job.list()) == []
        finally:
            job.purge()


def keys_on(job: pocketlib.Job, node: str, prefix: str, n: int) -> list[str]:
    """``n`` keys starting with ``prefix`` that the job's router places on ``node``."""
    keys = (f"{prefix}{i}" for i in range(1000))
    return [k for k in keys if job.router.write_node(k.encode()) == node][:n]


def test_put_many_tries_every_item_before_raising(two_nodes: list[NodeProcess]) -> None:
    addresses = [str(n.address) for n in two_nodes]
    # Not striped: each big value must land whole on the first node.
    with pocketlib.connect(addresses, job="put-many-errors", stripe_size=1 << 30) as job:
        try:
            first, second = addresses
            on_first = keys_on(job, first, "big/", 2)
            on_second = keys_on(job, second, "small/", 5)
            big = b"B" * (40 * 1024 * 1024)  # two of these do not fit in one 64 MiB node
            items = {on_first[0]: big, on_first[1]: big, **{k: b"s" for k in on_second}}
            # put_many documents: "Raises the first error after trying every item; items
            # that succeeded stay stored."
            with pytest.raises(pocketlib.CapacityError):
                job.put_many(items)
            assert job.exists(on_first[0]) != job.exists(on_first[1])
            assert job.get_many(on_second) == {k: b"s" for k in on_second}
        finally:
            job.purge()


def test_a_batch_over_two_nodes_keeps_both_at_work_at_once(
    two_nodes: list[NodeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_many and get_many send every node its first frames before reading any answer, so
    the nodes store and read their shares at the same time, not one after the other."""
    from pocketlib.client.batch import BATCH_KEYS
    from pocketlib.connection import Connection

    addresses = [str(n.address) for n in two_nodes]
    events: list[tuple[str, str]] = []
    send, read_header = Connection.send, Connection.read_header

    def logged_send(self: Connection, parts: Any) -> None:
        events.append(("send", self.peer))
        send(self, parts)

    def logged_read(self: Connection, rid: int) -> Any:
        events.append(("read", self.peer))
        return read_header(self, rid)

    with pocketlib.connect(addresses, job="both-at-once") as job:
        try:
            items = {f"k{i}": str(i).encode() for i in range(6 * BATCH_KEYS)}  # frames each
            job.put_many(items)
            assert job.get_many(list(items)) == items  # (what is asked of a node once, asked)
            monkeypatch.setattr(Connection, "send", logged_send)
            monkeypatch.setattr(Connection, "read_header", logged_read)
            for run in (lambda: job.put_many(items), lambda: job.get_many(list(items))):
                events.clear()
                run()
                first_read = events.index(next(e for e in events if e[0] == "read"))
                sent_before = [peer for kind, peer in events[:first_read] if kind == "send"]
                assert set(sent_before) == set(addresses), events[:first_read]
                assert max(Counter(sent_before).values()) > 1  # a window, not a frame each
            monkeypatch.undo()
        finally:
            job.purge()


def test_a_batch_over_two_nodes_stores_one_nodes_share_when_the_other_is_gone() -> None:
    with NodeProcess("dram", "16MiB") as alive, NodeProcess("dram", "16MiB") as doomed:
        addresses = [str(alive.address), str(doomed.address)]
        with pocketlib.connect(addresses, job="one-gone") as job:
            on_alive = keys_on(job, addresses[0], "a/", 300)
            on_doomed = keys_on(job, addresses[1], "d/", 300)
            doomed.kill()
            items = {k: k.encode() for k in on_alive + on_doomed}
            with pytest.raises(pocketlib.TransportError):
                job.put_many(items)
            # Every item of the node that answers was stored, in its several frames.
            assert job.get_many(on_alive) == {k: k.encode() for k in on_alive}
