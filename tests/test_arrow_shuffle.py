"""The Arrow-table shuffle: partitions, empty parts, ranges, frees, duplicates, aborts, no copy."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")

import pocketlib  # noqa: E402
import pocketlib.arrow as parrow  # noqa: E402
import pocketlib.serverless as pls  # noqa: E402
from pocketlib import JobHints, LocalCluster  # noqa: E402
from pocketlib.arrow.shuffle import hash_partitions, key_hash, range_partitioner  # noqa: E402
from pocketlib.client import shared  # noqa: E402
from pocketlib.errors import ConfigError, PocketTimeoutError  # noqa: E402
from pocketlib.serverless.shuffle import abort  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POCKET_SHARED_MEMORY", "1")
        with LocalCluster({"dram": 1}, node_capacity="256MiB", autoscale=False, tick=0.2) as c:
            yield c


@pytest.fixture
def job(cluster: LocalCluster) -> Iterator[pocketlib.Job]:
    with cluster.client() as client:
        j = client.register_job("ashuffle", JobHints(capacity="128MiB"))
        yield j
        j.deregister()


def orders(seed: int, n: int = 2000) -> pa.Table:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 500, n)
    names = pa.array([None if k % 97 == 0 else f"customer-{k}-{'x' * (k % 23)}" for k in keys])
    return pa.table({"k": pa.array(keys, pa.int64()), "name": names,
                     "x": rng.random(n), "m": pa.array(np.full(n, seed), pa.int32())})  # fmt: skip


# -- the hash --------------------------------------------------------------------------------

MASK = (1 << 64) - 1


def mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference(value: Any) -> int:
    """The documented hash, one value at a time in plain Python."""
    if value is None:
        return 0
    if isinstance(value, float):
        value = float("nan") if value != value else value + 0.0
        return mix(struct.unpack("<Q", struct.pack("<d", value))[0])
    if isinstance(value, bool | int):
        return mix(int(value) & MASK)
    raw = value.encode() if isinstance(value, str) else value
    h = mix(len(raw) ^ 0x5851F42D4C957F2D)
    for i in range(0, len(raw), 8):
        h = mix(h ^ int.from_bytes(raw[i : i + 8].ljust(8, b"\0"), "little"))
    return h


def test_the_hash_is_the_documented_one_for_every_key_type() -> None:
    ints = [0, 1, -1, 5, 2**62, None, -(2**63)]
    texts = ["", "a", "abcdefgh", "abcdefghi", "é" * 11, None, "x" * 100]
    floats = [0.0, -0.0, 1.5, float("nan"), None, -2.25, 1e300]
    t = pa.table({
        "i64": pa.array(ints, pa.int64()), "i8": pa.array([0, 1, -1, 5, 7, None, -3], pa.int8()),
        "s": pa.array(texts), "ls": pa.array(texts, pa.large_string()),
        "b": pa.array([None if s is None else s.encode() for s in texts], pa.binary()),
        "d": pa.array(texts).dictionary_encode(), "f": pa.array(floats),
        "date": pa.array([0, 1, -1, 5, 7, None, -3], pa.date32()),
        "flag": pa.array([True, False, None, True, True, False, False]),
    })  # fmt: skip
    assert list(key_hash(t, "i64")) == [reference(v) for v in ints]
    assert list(key_hash(t, "i8")) == [reference(v) for v in [0, 1, -1, 5, 7, None, -3]]
    assert list(key_hash(t, "date")) == list(key_hash(t, "i8"))  # by the integer value
    for column in ("s", "ls", "b", "d"):  # by the bytes, whatever the string type
        assert list(key_hash(t, column)) == [reference(v) for v in texts], column
    assert list(key_hash(t, "f")) == [reference(v) for v in floats]
    assert list(key_hash(t, "flag")) == [reference(v) for v in t["flag"].to_pylist()]
    pairs = zip(t["i64"].to_pylist(), texts, strict=True)
    combined = [mix(((reference(a) * 0x100000001B3) & MASK) ^ reference(b)) for a, b in pairs]
    assert list(key_hash(t, ["i64", "s"])) == combined
    sliced = t.slice(2, 4)  # offsets of a slice honoured
    assert list(key_hash(sliced, "s")) == [reference(v) for v in texts[2:6]]
    assert list(hash_partitions(t, "s", 5)) == [reference(v) % 5 for v in texts]
    with pytest.raises(ConfigError, match="cannot hash"):
        key_hash(pa.table({"l": pa.array([[1], [2]])}), "l")


def test_partitions_are_the_same_in_every_process() -> None:
    code = (
        "import pyarrow as pa\n"
        "from pocketlib.arrow.shuffle import hash_partitions\n"
        "t = pa.table({'k': list(range(-50, 50)), 's': [f'v{i}' * (i % 9) for i in range(100)]})\n"
        "print(list(hash_partitions(t, ['k', 's'], 7)))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)  # fmt: skip
    t = pa.table({"k": list(range(-50, 50)), "s": [f"v{i}" * (i % 9) for i in range(100)]})
    assert run.stdout.strip() == str(list(hash_partitions(t, ["k", "s"], 7)))


# -- round trips -------------------------------------------------------------------------------


def test_every_row_reaches_exactly_the_reducer_of_its_key(job: pocketlib.Job) -> None:
    mappers, reducers = 3, 4
    tables = [orders(m) for m in range(mappers)]
    for m, t in enumerate(tables):
        parrow.shuffle_write(job, "rt", m, t, by=["k", "name"], partitions=reducers)
    assert len(list(job.list("rt/"))) == mappers * reducers  # every part, each its own object
    seen = 0
    for r in range(reducers):
        got = parrow.shuffle_read(job, "rt", r, mappers=mappers, timeout=30)
        assert got.schema == tables[0].schema
        assert set(hash_partitions(got, ["k", "name"], reducers)) <= {r}
        assert got["m"].to_pylist() == sorted(got["m"].to_pylist())  # in mapper order
        seen += got.num_rows
        for m in range(mappers):  # this mapper's rows of the partition, in their order
            mine = tables[m].filter(pa.array(hash_partitions(tables[m], ["k", "name"],
                                                             reducers) == r))  # fmt: skip
            assert got.filter(pa.compute.equal(got["m"], m)).equals(mine)
    assert seen == sum(t.num_rows for t in tables)
    assert list(job.list("rt/")) == []  # freed as they were read


def test_empty_partitions_are_published_and_keep_the_schema(job: pocketlib.Job) -> None:
    one_key = pa.table({"k": pa.array([7] * 50, pa.int64()), "v": pa.array(range(50))})
    empty = one_key.slice(0, 0)
    parrow.shuffle_write(job, "empty", 0, one_key, by="k", partitions=5)
    parrow.shuffle_write(job, "empty", 1, empty, by="k", partitions=5)
    home = int(hash_partitions(one_key.slice(0, 1), "k", 5)[0])
    for r in range(5):
        got = parrow.shuffle_read(job, "empty", r, mappers=2, timeout=30)  # none waits forever
        assert got.schema == one_key.schema
        assert got.num_rows == (50 if r == home else 0)


def test_range_partitioning_makes_a_global_order(job: pocketlib.Job) -> None:
    tables = [orders(m, 3000) for m in range(3)]
    sample = pa.concat_arrays([t["k"].combine_chunks()[:300] for t in tables])
    by_range = range_partitioner(sample, 4)
    assert len(by_range.boundaries) == 3
    for m, t in enumerate(tables):
        parrow.shuffle_write(job, "range", m, t, by="k", partitions=4, partitioner=by_range)
    parts = [parrow.shuffle_read(job, "range", r, mappers=3, timeout=30) for r in range(4)]
    keys = [p["k"].to_pylist() for p in parts]
    assert all(len(k) > 0 for k in keys)
    for r, ks in enumerate(keys):  # as RangePartitioner puts each key
        assert {by_range(k, 4) for k in ks} == {r}
    merged = [k for ks in keys for k in sorted(ks)]
    assert merged == sorted(k for t in tables for k in t["k"].to_pylist())
    with pytest.raises(ConfigError, match="one key column"):
        parrow.shuffle_write(job, "range2", 0, tables[0], by=["k", "x"], partitions=4,
                             partitioner=by_range)  # fmt: skip


def test_a_callable_partitioner_and_its_bad_answers(job: pocketlib.Job) -> None:
    t = pa.table({"k": pa.array(range(10))})
    parrow.shuffle_write(job, "odd", 0, t, by="k", partitions=2,
                         partitioner=lambda tab, n: np.asarray(tab["k"]) % n)  # fmt: skip
    assert parrow.shuffle_read(job, "odd", 1, mappers=1)["k"].to_pylist() == [1, 3, 5, 7, 9]
    with pytest.raises(ConfigError, match="one id in"):
        parrow.shuffle_write(job, "bad", 0, t, by="k", partitions=2,
                             partitioner=lambda tab, n: np.full(tab.num_rows, 2))  # fmt: skip
    assert list(job.list("bad/")) == []


def test_free_false_keeps_the_parts_and_a_duplicate_mapper_changes_nothing(
    job: pocketlib.Job,
) -> None:
    tables = [orders(m, 500) for m in range(2)]
    for m in (0, 1, 1):  # mapper 1 delivered twice
        parrow.shuffle_write(job, "dup", m, tables[m], by="k", partitions=2)
    first = [parrow.shuffle_read(job, "dup", r, mappers=2, free=False) for r in range(2)]
    assert len(list(job.list("dup/"))) == 4  # kept
    again = [parrow.shuffle_read(job, "dup", r, mappers=2) for r in range(2)]
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert sum(t.num_rows for t in again) == 1000
    assert list(job.list("dup/")) == []


def test_many_mappers_are_read_in_one_batch(job: pocketlib.Job) -> None:
    mappers = 70  # above what a reader leases: copies, in one batched get
    for m in range(mappers):
        parrow.shuffle_write(job, "many", m, pa.table({"k": [m, m + 1000]}), by="k",
                             partitions=2)  # fmt: skip
    got = [parrow.shuffle_read(job, "many", r, mappers=mappers) for r in range(2)]
    assert sorted(k for t in got for k in t["k"].to_pylist()) == sorted(
        [*range(mappers), *range(1000, 1000 + mappers)])  # fmt: skip
    assert list(job.list("many/")) == []


def test_an_aborted_shuffle_makes_its_waiting_readers_raise(job: pocketlib.Job) -> None:
    parrow.shuffle_write(job, "ab", 0, orders(0, 100), by="k", partitions=2)
    caught: list[BaseException] = []

    def read() -> None:
        try:
            parrow.shuffle_read(job, "ab", 0, mappers=2, timeout=30)
        except BaseException as exc:
            caught.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    abort(job, "ab", "RuntimeError: mapper 1 died")
    reader.join(timeout=30)
    assert len(caught) == 1
    assert isinstance(caught[0], pls.ShuffleAbortedError)
    assert "mapper 1 died" in str(caught[0])
    with pytest.raises(PocketTimeoutError):
        parrow.shuffle_read(job, "never", 0, mappers=1, timeout=0.5)


def test_a_co_located_read_copies_nothing_and_tcp_gives_the_same_table(
    job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 200_000  # parts of about 1.6 MiB: written in place, read in place
    big = pa.table({"k": pa.array(np.arange(n) % 1000), "x": pa.array(np.arange(n) * 0.5)})
    in_place: list[int] = []
    put_filled = shared.put_filled
    monkeypatch.setattr(shared, "put_filled", lambda *a: in_place.append(a[5]) or put_filled(*a))
    for m in range(2):
        parrow.shuffle_write(job, "zc", m, big, by="k", partitions=2, ttl=60)
    assert len(in_place) == 4  # each part written by Arrow straight into the node's memory
    before = pa.total_allocated_bytes()
    got = parrow.shuffle_read(job, "zc", 0, mappers=2, free=False)
    assert pa.total_allocated_bytes() == before  # no Arrow allocation: nothing was copied
    arena = job.client.arena(job.router.write_node(b"zc/r0/m0"))
    assert arena is not None
    base = ctypes.addressof(ctypes.c_char.from_buffer(arena._map))
    for chunk in got["x"].chunks:
        assert base <= chunk.buffers()[1].address < base + len(arena._map)  # the node's memory
    expected = big.filter(pa.array(hash_partitions(big, "k", 2) == 0))
    assert got.equals(pa.concat_tables([expected, expected]))

    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    with pocketlib.Client(job.ticket.nodes) as client:  # a client that maps nothing
        remote = client.attach(job.ticket)
        over_tcp = parrow.shuffle_read(remote, "zc", 0, mappers=2)
        assert over_tcp.equals(got)
        parrow.shuffle_write(remote, "tcp", 0, big, by="k", partitions=2)
    assert len(in_place) == 4  # (not through a client that maps nothing)
    assert parrow.shuffle_read(job, "tcp", 1, mappers=1).num_rows == n - expected.num_rows


# -- the executor -------------------------------------------------------------------------------


def orders_of(seed: int) -> pa.Table:
    return orders(seed, 800)


def totals(table: pa.Table) -> dict[int, tuple[int, float]]:
    grouped = table.group_by("k").aggregate([("x", "count"), ("x", "sum")])
    return {k: (c, s) for k, c, s in zip(*(grouped[c].to_pylist() for c in
                                            ("k", "x_count", "x_sum")), strict=True)}  # fmt: skip


def test_map_shuffle_reduce_shuffles_tables_by_a_key_column(job: pocketlib.Job) -> None:
    with pls.FunctionExecutor(job=job, workers=2) as fexec:
        futures = fexec.map_shuffle_reduce(orders_of, range(4), totals, reducers=3, by="k",
                                           timeout=60)  # fmt: skip
        parts = fexec.get_result(futures)
        whole = pa.concat_tables([orders_of(s) for s in range(4)])
        expected = totals(whole)
        merged: dict[int, tuple[int, float]] = {}
        for r, part in enumerate(parts):
            assert not set(part) & set(merged)  # each key reduced in exactly one reducer
            keys = pa.table({"k": pa.array(list(part), pa.int64())})
            assert set(hash_partitions(keys, "k", 3)) <= {r}
            merged.update(part)
        assert merged.keys() == expected.keys()
        assert all(merged[k][0] == expected[k][0] for k in expected)
        assert all(merged[k][1] == pytest.approx(expected[k][1]) for k in expected)
        assert list(job.list("shuffle/")) == []
        by_range = range_partitioner(whole["k"], 3)  # a global order over the reducers
        ranged = fexec.get_result(
            fexec.map_shuffle_reduce(
                orders_of, range(4), totals, reducers=3, by="k", partition=by_range, timeout=60
            )
        )
        assert [k for part in ranged for k in sorted(part)] == sorted(expected)
        with pytest.raises(ConfigError, match="by="):
            fexec.get_result(fexec.map_shuffle_reduce(orders_of, range(1), totals, reducers=2,
                                                      timeout=60))  # fmt: skip
