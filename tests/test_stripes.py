"""Striping of large values over real nodes: chunks spread, reads check, nothing is left."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.block
import pytest
from _helpers import wait_until
from conftest import unique_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pocketlib
from pocketlib.client import stripes
from pocketlib.client.job import Job
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import (
    AccessError,
    CapacityError,
    ChecksumError,
    ConflictError,
    NodeLostError,
    NotFoundError,
    RequestError,
)
from pocketlib.protocol import Flag, Op, checksum
from pocketlib.routing.weightmap import WeightMap
from pocketlib.ticket import DEFAULT_STRIPE_SIZE

KiB = 1024
MiB = 1024 * KiB
STRIPE = 64 * KiB

HYPOTHESIS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def with_stripe(job: Job, stripe_size: int = STRIPE, **changes: Any) -> Job:
    """The same job (same client and tokens) with another stripe size or ticket fields."""
    ticket = dataclasses.replace(job.ticket, stripe_size=stripe_size, **changes)
    return Job(job.client, ticket, job._tokens)


@pytest.fixture(scope="module", params=["tcp", "shared"])
def base(request: pytest.FixtureRequest, two_nodes: list[NodeProcess]) -> Iterator[Job]:
    """A direct-mode job over the two session nodes, for the module; values through the socket
    and through co-located shared memory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POCKET_SHARED_MEMORY", "1" if request.param == "shared" else "0")
        handle = pocketlib.connect([str(n.address) for n in two_nodes], job=unique_job("stripe"))
        try:
            yield handle
        finally:
            with contextlib.suppress(AccessError):
                handle.purge()
            handle.close()


@pytest.fixture
def job(base: Job) -> Iterator[Job]:
    """``base`` with 64 KiB stripes, emptied after each test."""
    yield with_stripe(base)
    base.delete_prefix("")  # (purge would close the job on the nodes)


def objects(job: Job) -> dict[str, int]:
    """Objects the job has on each node, chunks included."""
    return {a: s["tier"]["objects_by_job"].get(job.ticket.job, 0) for a, s in job.stats().items()}


def total(job: Job) -> int:
    return sum(objects(job).values())


def manifest(job: Job, key: str) -> stripes.Manifest:
    raw = key.encode()
    body = job._call(job.router.write_node(raw), Op.GET, raw)[1]
    return stripes.Manifest.decode(body, raw)


def chunk_node(job: Job, chunk: bytes) -> str:
    return job.router.write_node(chunk)


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes in which every 4-byte word says where it is: a mix of chunks cannot pass."""
    words = (size + 3) // 4
    return b"".join((i ^ seed).to_bytes(4, "little") for i in range(words))[:size]


# -- placement ---------------------------------------------------------------------------------


def test_flag_is_stored() -> None:
    assert Flag.STRIPED & Flag.STORED
    assert Flag.STRIPED not in (Flag.LZ4, Flag.DELETE_AFTER_READ, Flag.RANGE, Flag.MORE,
                                Flag.SHARED, Flag.PERSIST)  # fmt: skip


def test_direct_mode_keeps_the_default_stripe_size(base: Job) -> None:
    assert base.ticket.stripe_size == DEFAULT_STRIPE_SIZE


def test_a_value_of_several_stripes_lands_on_both_nodes(job: Job) -> None:
    value = os.urandom(20 * STRIPE + 5)
    job.put("big", value)
    counts = objects(job)
    assert all(n > 0 for n in counts.values()), counts
    assert sum(counts.values()) == 21 + 1  # 21 chunks and the manifest
    m = manifest(job, "big")
    assert (m.count, m.chunk_size, m.size, m.checksum) == (21, STRIPE, len(value), checksum(value))
    info = job.stat("big")
    assert info.striped
    assert not info.compressed
    assert (info.size, info.checksum) == (len(value), checksum(value))
    assert job.exists("big")
    assert job.get("big") == value


def test_a_value_of_one_stripe_is_not_striped(job: Job) -> None:
    job.put("edge", os.urandom(STRIPE))
    assert not job.stat("edge").striped
    assert total(job) == 1


def test_one_node_never_stripes(two_nodes: list[NodeProcess]) -> None:
    with pocketlib.connect([str(two_nodes[0].address)], job=unique_job("one")) as handle:
        job = with_stripe(handle)
        try:
            value = os.urandom(10 * STRIPE)
            job.put("big", value)
            assert not job.stat("big").striped
            assert job.get("big") == value
        finally:
            handle.purge()


# -- reads -------------------------------------------------------------------------------------


@HYPOTHESIS
@given(size=st.sampled_from([1, 2, 3, 7]).flatmap(
    lambda n: st.integers(n * STRIPE - 2, n * STRIPE + 2)))  # fmt: skip
def test_round_trip_around_chunk_borders(job: Job, size: int) -> None:
    value = pattern(size, seed=size)
    job.put("k", value)
    assert job.stat("k").striped == (size > STRIPE)
    assert job.get("k") == value
    buf = bytearray(size + 7)
    assert job.get_into("k", buf) == size
    assert buf[:size] == value
    exact = bytearray(size)
    assert job.get_into("k", memoryview(exact)) == size
    assert exact == value
    with job.get_buffer("k") as shared:
        assert shared.view.readonly
        assert bytes(shared.view) == value
    info = job.stat("k")
    assert (info.size, info.checksum) == (size, checksum(value))


@HYPOTHESIS
@given(start=st.integers(0, 4 * STRIPE + 10), length=st.integers(0, 3 * STRIPE))
def test_get_range(job: Job, start: int, length: int) -> None:
    value = pattern(4 * STRIPE - 3)
    if not job.exists("r"):
        job.put("r", value)
    assert job.get_range("r", start, start + length) == value[start : start + length]


def test_get_range_edges(job: Job) -> None:
    value = pattern(3 * STRIPE + 100)
    job.put("r", value)
    assert job.get_range("r", STRIPE - 1, STRIPE + 1) == value[STRIPE - 1 : STRIPE + 1]
    assert job.get_range("r", 0, len(value)) == value
    assert job.get_range("r", 5, 5) == b""
    assert job.get_range("r", len(value), len(value) + 10) == b""
    assert job.get_range("r", len(value) + STRIPE, len(value) + 2 * STRIPE) == b""
    assert job.get_range("r", 2 * STRIPE, 10**9) == value[2 * STRIPE :]
    with pytest.raises(NotFoundError):
        job.get_range("absent", 0, 10)


def test_get_into_a_small_buffer(job: Job) -> None:
    job.put("k", os.urandom(3 * STRIPE))
    with pytest.raises(RequestError, match="buffer holds"):
        job.get_into("k", bytearray(3 * STRIPE - 1))
    with pytest.raises(RequestError):
        job.get_into("k", b"read-only" * 50_000)
    assert total(job) == 4  # left as it was


def test_get_many_and_put_many(job: Job) -> None:
    items = {"small": b"s", "big-1": os.urandom(5 * STRIPE), "big-2": pattern(2 * STRIPE + 1)}
    job.put_many(items)
    assert job.stat("big-1").striped
    assert not job.stat("small").striped
    assert total(job) == 1 + (5 + 1) + (3 + 1)
    assert job.get_many([*items, "absent"]) == items
    assert job.get_many(list(items), delete_after_read=True) == items
    assert total(job) == 0
    assert job.get_many(list(items)) == {}


def test_streams_are_not_striped(job: Job) -> None:
    value = os.urandom(4 * STRIPE)
    with job.writer("streamed", chunk_size=STRIPE) as w:
        w.write(value)
    assert not job.stat("streamed").striped
    job.put("put", value)
    with pytest.raises(RequestError, match="striped"):
        job.reader("put")


# -- deletion and lifetime ---------------------------------------------------------------------


def test_delete_takes_the_chunks(job: Job) -> None:
    job.put("k", os.urandom(7 * STRIPE))
    assert job.delete("k")
    assert total(job) == 0
    assert not job.exists("k")
    with pytest.raises(NotFoundError):
        job.get("k")
    assert not job.delete("k")


def test_delete_after_read_takes_the_chunks(job: Job) -> None:
    value = os.urandom(7 * STRIPE)
    for read in ("get", "get_into", "get_buffer"):
        job.put("k", value)
        if read == "get":
            assert job.get("k", delete_after_read=True) == value
        elif read == "get_into":
            buf = bytearray(len(value))
            assert job.get_into("k", buf, delete_after_read=True) == len(value)
            assert buf == value
        else:
            with job.get_buffer("k", delete_after_read=True) as b:
                assert bytes(b.view) == value
        assert total(job) == 0, read
        assert not job.exists("k")


def test_ttl_applies_to_manifest_and_chunks(job: Job) -> None:
    job.put("k", os.urandom(5 * STRIPE), ttl=0.5)
    assert job.stat("k").expires is not None
    wait_until(lambda: not job.exists("k"), what="expiry of the manifest")
    wait_until(lambda: total(job) == 0, what="expiry of the chunks")


def test_list_and_delete_prefix_never_show_chunks(job: Job) -> None:
    job.put("a", os.urandom(9 * STRIPE))
    job.put("a/b", os.urandom(3 * STRIPE))
    job.put("ab", b"small")
    assert list(job.list()) == ["a", "a/b", "ab"]
    assert list(job.list(page_size=2)) == ["a", "a/b", "ab"]  # pages full of chunk keys
    assert list(job.list("a/")) == ["a/b"]
    assert job.delete_prefix("a/") == 3 + 1  # the chunks count too
    assert list(job.list()) == ["a", "ab"]
    job.delete_prefix("")
    assert total(job) == 0


def test_user_keys_with_nul_are_listed(job: Job) -> None:
    job.put("odd\0key", b"v")
    assert list(job.list()) == ["odd\0key"]


# -- overwrites --------------------------------------------------------------------------------


def test_overwrites_leave_no_chunks_behind(job: Job) -> None:
    job.put("k", b"small")
    job.put("k", os.urandom(6 * STRIPE))  # small -> striped
    assert total(job) == 6 + 1
    value = os.urandom(3 * STRIPE + 1)
    job.put("k", value)  # striped -> striped
    assert total(job) == 4 + 1
    assert job.get("k") == value


def test_a_small_overwrite_of_a_striped_value_leaves_no_chunks(job: Job) -> None:
    job.put("k", os.urandom(6 * STRIPE))
    job.put("k", b"small")
    assert job.get("k") == b"small"
    assert list(job.list()) == ["k"]
    assert total(job) == 1


def test_a_whole_overwrite_of_stripe_size_leaves_no_chunks(job: Job) -> None:
    """A value of exactly the stripe size is not striped, and goes through shared memory when
    the node is on this host: that path reports what it replaced too."""
    job.put("k", os.urandom(4 * STRIPE))
    whole = os.urandom(STRIPE)
    job.put("k", whole)
    assert not job.stat("k").striped
    assert job.get("k") == whole
    assert total(job) == 1


def test_put_many_over_striped_values_leaves_no_chunks(job: Job) -> None:
    job.put_many({"a": os.urandom(3 * STRIPE), "b": os.urandom(5 * STRIPE)})
    assert total(job) > 2
    job.put_many({"a": b"small", "b": b"x" * 2000, "c": b"new"})
    assert job.get_many(["a", "b", "c"]) == {"a": b"small", "b": b"x" * 2000, "c": b"new"}
    assert total(job) == 3


def test_a_failed_put_leaves_no_chunks_and_the_old_value(job: Job) -> None:
    big = with_stripe(job, 4 * MiB)
    old = os.urandom(3 * 4 * MiB)
    big.put("k", old)
    before = total(job)
    with pytest.raises(CapacityError):
        big.put("k", bytes(150 * MiB))  # more than the two 64 MiB nodes hold
    assert big.get("k") == old
    assert total(job) == before


# -- damage ------------------------------------------------------------------------------------


def test_a_corrupted_chunk_is_never_returned(job: Job) -> None:
    value = os.urandom(4 * STRIPE)
    job.put("k", value)
    chunk = manifest(job, "k").chunk_key(b"k", 2)
    node = chunk_node(job, chunk)
    job._put_at(node, chunk, os.urandom(STRIPE), 0, 0)  # right size, wrong bytes
    with pytest.raises(ChecksumError):
        job.get("k")
    with pytest.raises(ChecksumError):
        job.get_into("k", bytearray(len(value)))
    job._put_at(node, chunk, os.urandom(STRIPE + 1), 0, 0)  # wrong size
    with pytest.raises(ChecksumError, match="wrong size"):
        job.get("k")
    job._put_at(node, chunk, os.urandom(100), 0, 0)
    with pytest.raises(ChecksumError, match="wrong size"):
        job.get("k")


def test_a_missing_chunk_raises(job: Job) -> None:
    value = os.urandom(4 * STRIPE)
    job.put("k", value)
    chunk = manifest(job, "k").chunk_key(b"k", 2)
    assert job._call(chunk_node(job, chunk), Op.DELETE, chunk)[0].size == 1
    for read in (lambda: job.get("k"), lambda: job.get_into("k", bytearray(len(value))),
                 lambda: job.get_buffer("k"), lambda: job.get_many(["k"]),
                 lambda: job.get_range("k", 2 * STRIPE - 1, 2 * STRIPE + 1)):  # fmt: skip
        with pytest.raises(NotFoundError, match="chunk 2 of striped value 'k'"):
            read()
    assert job.get_range("k", 0, 2 * STRIPE) == value[: 2 * STRIPE]  # chunks 0 and 1 are there
    assert job.stat("k").striped
    with pytest.raises(NotFoundError, match="chunk 2"):
        job.get("k", delete_after_read=True)
    assert total(job) == 0  # the manifest was taken, and the chunks that were left with it


def test_a_chunk_on_a_lost_node_raises_node_lost(job: Job) -> None:
    job.put("k", os.urandom(20 * STRIPE))
    m = manifest(job, "k")
    home = job.router.write_node(b"k")
    (lost,) = set(job.ticket.maps[-1].weights) - {home}
    on_lost = [i for i in range(m.count) if chunk_node(job, m.chunk_key(b"k", i)) == lost]
    assert on_lost
    weights = dict(job.ticket.maps[-1].weights)
    maps = (WeightMap(1, weights), WeightMap(2, weights))  # a second version, as after a loss
    view = with_stripe(job, maps=maps, lost=frozenset({lost}))
    with pytest.raises(NodeLostError, match=lost):
        view.get("k")
    lo = on_lost[0] * STRIPE
    with pytest.raises(NodeLostError, match=lost):
        view.get_range("k", lo, lo + 10)


def test_chunks_are_found_through_older_weight_maps(job: Job) -> None:
    value = pattern(8 * STRIPE + 3)
    job.put("k", value)
    first = sorted(job.ticket.maps[-1].weights)[0]
    # The job moved to one node: chunks written under version 1 are read where v1 put them.
    maps = (job.ticket.maps[-1], WeightMap(2, {first: 1.0}))
    moved = with_stripe(job, maps=maps)
    assert moved.get("k") == value
    assert moved.get_range("k", STRIPE - 3, 5 * STRIPE) == value[STRIPE - 3 : 5 * STRIPE]
    assert moved.stat("k").striped
    assert moved.delete("k")
    assert total(job) == 0


# -- compression -------------------------------------------------------------------------------


def test_compressed_values_stripe_their_compressed_bytes(job: Job) -> None:
    value = os.urandom(5 * STRIPE) + bytes(40 * STRIPE)  # compresses to a bit over 5 stripes
    stored = lz4.block.compress(value, store_size=True)
    assert len(stored) > 5 * STRIPE
    job.put("c", value, compress=True)
    info = job.stat("c")
    assert info.striped
    assert info.compressed
    assert (info.size, info.checksum) == (len(stored), checksum(stored))
    assert info.length == len(value)  # from the lz4 block's header, at the start of chunk 0
    assert job.get("c") == value
    buf = bytearray(len(value))
    assert job.get_into("c", buf) == len(value)
    assert buf == value
    assert job.get_range("c", 6 * STRIPE, 7 * STRIPE) == value[6 * STRIPE : 7 * STRIPE]
    with job.get_buffer("c") as b:
        assert bytes(b.view) == value
    job.put("small", bytes(40 * STRIPE), compress=True)  # compresses below one stripe
    assert not job.stat("small").striped
    assert job.get("c", delete_after_read=True) == value
    assert list(job.list()) == ["small"]
    assert total(job) == 1


# -- persist -----------------------------------------------------------------------------------


def test_persisted_striped_values_outlive_purge_and_delete_everywhere(tmp_path: Path) -> None:
    nodes = [NodeProcess("dram", "64MiB", extra_args=["--persist", f"nvme:64MiB:{tmp_path / d}"])
             for d in ("a", "b")]  # fmt: skip
    try:
        addresses = [str(n.address) for n in nodes]
        value = os.urandom(6 * STRIPE)
        with pocketlib.connect(addresses, job="kept") as handle:
            job = with_stripe(handle)
            for key in ("result", "other", "gone"):
                job.put(key, value, persist=True)
            job.put("scratch", value)
            assert job.stat("result").striped
            assert job.delete("gone")  # from the fast tier and the persist tier
            handle.purge()  # the fast tier's copies go; persisted chunks and manifests stay
        with pocketlib.connect(addresses, job="kept") as handle:
            job = with_stripe(handle)
            assert sorted(job.list()) == ["other", "result"]
            assert job.get("result") == value
            assert job.delete("result")
            assert job.get("other", delete_after_read=True) == value
            handle.purge()
        with pocketlib.connect(addresses, job="kept") as handle:
            assert list(handle.list()) == []
            assert total(handle) == 0
    finally:
        for n in nodes:
            n.stop()


# -- concurrency -------------------------------------------------------------------------------


def test_a_read_during_overwrites_is_one_value_or_a_clear_error(job: Job) -> None:
    size = 6 * STRIPE + 11
    versions = {seed: pattern(size, seed) for seed in range(1, 6)}
    job.put("k", versions[1])
    stop = threading.Event()
    errors: list[BaseException] = []

    def overwrite() -> None:
        try:
            while not stop.is_set():
                for value in versions.values():
                    job.put("k", value)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=overwrite)
    writer.start()
    seen: set[int] = set()
    conflicts = 0
    try:
        for _ in range(60):
            try:
                value = job.get("k")
                part = job.get_range("k", STRIPE - 5, 3 * STRIPE)
            except (ConflictError, NotFoundError):
                conflicts += 1
                continue
            matches = [seed for seed, v in versions.items() if v == value]
            assert len(matches) == 1, "a read returned a mix of two puts"
            seen.add(matches[0])
            assert any(v[STRIPE - 5 : 3 * STRIPE] == part for v in versions.values())
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert seen or conflicts
    assert job.get("k") in versions.values()
    assert total(job) == 7 + 1  # every overwritten value's chunks went


# -- with a controller -------------------------------------------------------------------------


def test_striping_on_a_local_cluster() -> None:
    with pocketlib.LocalCluster(node_capacity="64MiB", autoscale=False) as cluster:
        client = cluster.client()
        registered = client.register_job("striped", pocketlib.JobHints(capacity="100MiB"))
        assert len(registered.ticket.maps[-1].weights) == 2
        job = client.attach(dataclasses.replace(registered.ticket, stripe_size=STRIPE))
        value = os.urandom(30 * STRIPE + 1)
        job.put("big", value, ttl=600)
        stats = client.node_stats(list(job.ticket.maps[-1].weights))
        used = {a: s["tier"]["used_by_job"].get(job.ticket.job, 0) for a, s in stats.items()}
        assert all(n > 0 for n in used.values()), used
        assert sum(used.values()) >= len(value)
        assert job.get("big") == value
        assert job.stat("big").expires is not None
        freed = job.deregister()
        assert freed["objects"] == 31 + 1
        client.close()
