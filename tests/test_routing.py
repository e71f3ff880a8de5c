"""Key placement by weighted rendezvous hashing, alone and over two real nodes."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import pytest

import pocketlib
from pocketlib.cluster import NodeProcess
from pocketlib.routing import WeightedRendezvous

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
                assert on_node == {k for k in keys if job.router.node_for(k.encode()) == address}
                assert len(on_node) == per_node[address]
            assert job.delete_prefix("spread/") == len(keys)
            assert list(job.list()) == []
        finally:
            job.purge()


def keys_on(job: pocketlib.Job, node: str, prefix: str, n: int) -> list[str]:
    """``n`` keys starting with ``prefix`` that the job's router places on ``node``."""
    keys = (f"{prefix}{i}" for i in range(1000))
    return [k for k in keys if job.router.node_for(k.encode()) == node][:n]


def test_put_many_tries_every_item_before_raising(two_nodes: list[NodeProcess]) -> None:
    addresses = [str(n.address) for n in two_nodes]
    with pocketlib.connect(addresses, job="put-many-errors") as job:
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
