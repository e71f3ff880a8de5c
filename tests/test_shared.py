"""The co-located path: a client on the node's host reads and writes the tier's memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import node_stats, tier_stats, wait_until

import pocketlib
from pocketlib.client.arena import open_arena
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import RequestError
from pocketlib.transport import boot_id

MiB = 1024 * 1024


@pytest.fixture
def local_job(node: NodeProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[pocketlib.Job]:
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1")
    with pocketlib.connect([str(node.address)], job=f"shared-{os.getpid()}") as job:
        try:
            yield job
        finally:
            job.purge()


def shm_ops(job: pocketlib.Job) -> dict[str, int]:
    return {k: v for k, v in node_stats(job)["ops"].items() if k.startswith("shm_")}


def test_large_values_go_through_shared_memory(local_job: pocketlib.Job) -> None:
    value = os.urandom(3 * MiB)
    before = shm_ops(local_job)
    local_job.put("big", value)
    assert local_job.get("big") == value
    buf = bytearray(4 * MiB)
    assert local_job.get_into("big", buf) == len(value)
    assert bytes(buf[: len(value)]) == value
    after = shm_ops(local_job)
    assert after.get("shm_reserve", 0) == before.get("shm_reserve", 0) + 1
    assert after.get("shm_commit", 0) == before.get("shm_commit", 0) + 1
    assert after.get("shm_get", 0) >= before.get("shm_get", 0) + 2
    # Every lease was given back: only the stored value is charged.
    wait_until(lambda: tier_stats(local_job)["used"] == tier_stats(local_job)["used_by_job"].get(
        local_job.name, 0), what="leases to be released")  # fmt: skip


def test_each_size_takes_the_path_that_wins_on_this_host(local_job: pocketlib.Job) -> None:
    """A shared-memory put is two round trips (reserve, commit): measured slower than the
    socket up to 128 KiB (docs/tiers.md), so values below 256 KiB go through the socket; a GET
    of up to 64 KiB is answered inline, a larger one through the mapping."""
    for size, shared in ((64 * 1024, False), (128 * 1024, False), (256 * 1024, True)):
        before = node_stats(local_job)["ops"]
        local_job.put(f"v{size}", os.urandom(size))
        after = node_stats(local_job)["ops"]
        assert after.get("shm_commit", 0) - before.get("shm_commit", 0) == int(shared), size
        assert after.get("put", 0) - before.get("put", 0) == int(not shared), size
    value = os.urandom(1 * MiB)  # written into the mapping: pages prefaulted, value intact
    local_job.put("prefaulted", value)
    assert local_job.get("prefaulted") == value


def test_a_value_is_made_in_place_in_the_nodes_memory(
    local_job: pocketlib.Job, node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = os.urandom(2 * MiB)
    seen: list[int] = []

    def fill(view: memoryview) -> None:
        seen.append(len(view))
        view[:] = value

    before = shm_ops(local_job)
    local_job.put_filled("made", len(value), fill)
    assert local_job.get("made") == value
    assert seen == [len(value)]
    after = shm_ops(local_job)
    assert after.get("shm_commit", 0) == before.get("shm_commit", 0) + 1
    local_job.put_filled("small", 10, lambda v: v.__setitem__(slice(None), b"0123456789"))
    assert local_job.get("small") == b"0123456789"  # (below the crossover: through the socket)
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    with pocketlib.connect([str(node.address)], job=local_job.name) as remote:
        before = shm_ops(remote)
        remote.put_filled("made", len(value), lambda v: v.__setitem__(slice(None), value[::-1]))
        assert shm_ops(remote) == before  # filled in a buffer of its own, then put
    assert local_job.get("made") == value[::-1]


def test_switched_off_it_is_not_used(node: NodeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    with pocketlib.connect([str(node.address)], job=f"tcp-only-{os.getpid()}") as job:
        before = shm_ops(job)
        job.put("big", b"x" * (2 * MiB))
        assert job.get("big") == b"x" * (2 * MiB)
        assert shm_ops(job) == before
        job.purge()


def test_a_zero_copy_buffer_outlives_delete_and_overwrite(local_job: pocketlib.Job) -> None:
    first, second = b"A" * (2 * MiB), b"B" * (2 * MiB)
    local_job.put("k", first)
    base = tier_stats(local_job)["used"]
    with local_job.get_buffer("k") as buf:
        assert bytes(buf.view) == first
        assert buf.view.readonly
        local_job.delete("k")
        local_job.put("k", second)  # same size: it would reuse the space if it were free
        local_job.put("other", second)
        assert bytes(buf.view) == first, "a held buffer changed under its reader"
        assert tier_stats(local_job)["used"] > base  # the leased space is still charged
    assert local_job.get("k") == second
    wait_until(lambda: tier_stats(local_job)["used"] == 2 * base, what="the lease release")


def test_small_and_compressed_values_through_get_buffer(local_job: pocketlib.Job) -> None:
    local_job.put("small", b"tiny")
    with local_job.get_buffer("small") as buf:
        assert bytes(buf) == b"tiny"
    data = b"compress me " * 100_000
    local_job.put("z", data, compress=True)
    with local_job.get_buffer("z") as buf:
        assert bytes(buf) == data


def test_too_small_a_buffer_releases_the_lease(local_job: pocketlib.Job) -> None:
    local_job.put("big", b"v" * (2 * MiB))
    used = tier_stats(local_job)["used"]
    with pytest.raises(RequestError):
        local_job.get_into("big", bytearray(MiB))
    assert local_job.get("big") == b"v" * (2 * MiB)  # the connection is still in step
    wait_until(lambda: tier_stats(local_job)["used"] == used, what="the lease release")


def test_a_client_that_dies_holding_a_lease_frees_it(node: NodeProcess) -> None:
    name = f"dies-{os.getpid()}"
    with pocketlib.connect([str(node.address)], job=name) as job:
        job.put("k", b"x" * (2 * MiB))
        used = tier_stats(job)["used"]
        pid = os.fork()
        if pid == 0:  # the child leases the value, overwrites it, and dies holding the lease
            try:
                buf = job.get_buffer("k")
                job.put("k", b"y" * (2 * MiB))
                os._exit(0 if bytes(buf.view[:1]) == b"x" else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        wait_until(lambda: tier_stats(job)["used"] == used, what="the dead client's lease freed")
        assert job.get("k") == b"y" * (2 * MiB)
        job.purge()


def test_only_the_same_file_on_the_same_host_is_mapped(tmp_path: Path) -> None:
    path = tmp_path / "arena"
    path.write_bytes(b"\0" * 4096)
    st = os.stat(path)
    info = {"path": str(path), "size": 4096, "dev": st.st_dev, "ino": st.st_ino,
            "boot_id": boot_id()}  # fmt: skip
    arena = open_arena(info)
    assert arena is not None
    arena.close()
    assert open_arena({**info, "boot_id": "another-host"}) is None
    assert open_arena({**info, "ino": st.st_ino + 1}) is None  # same name, another file
    assert open_arena({}) is None  # the node has no shareable tier
    assert open_arena({**info, "path": str(tmp_path / "missing")}) is None


def test_an_nvme_node_shares_its_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1")
    with (
        NodeProcess("nvme", "32MiB", extra_args=["--path", str(tmp_path)]) as node,
        pocketlib.connect([str(node.address)], job="nvme-shared") as job,
    ):
        value = os.urandom(MiB)
        job.put("k", value)
        with job.get_buffer("k") as buf:
            assert bytes(buf) == value
        assert shm_ops(job).get("shm_commit") == 1


@pytest.mark.parametrize("size", [200 * 1024, 6 * MiB])  # hashed after, and while, copying
def test_a_corrupted_byte_in_shared_memory_is_returned_only_unverified(
    local_job: pocketlib.Job, size: int
) -> None:
    from pocketlib.errors import ChecksumError

    value = os.urandom(size)
    local_job.put("k", value)
    node = local_job.router.nodes[0]
    arena = local_job.client.arena(node)
    assert arena is not None
    with local_job.get_buffer("k") as buf:  # find the value in the mapping
        offset = bytes(arena.view).find(bytes(buf.view[:64]))
    assert offset >= 0
    original = arena.view[offset + size // 2]
    arena.view[offset + size // 2] = original ^ 0xFF  # a bit flip behind the node's back
    try:
        with pytest.raises(ChecksumError):
            local_job.get("k")
        with pytest.raises(ChecksumError):
            local_job.get_into("k", bytearray(size))
        with pytest.raises(ChecksumError):
            local_job.get_buffer("k")
        if size >= 256 * 1024:  # (mapped, not answered inline): the opt-out trusts the mapping
            with local_job.get_buffer("k", verify=False) as unchecked:
                assert unchecked.leased
                assert unchecked.view[size // 2] == original ^ 0xFF  # the node's bytes, as they are
    finally:
        arena.view[offset + size // 2] = original
    assert local_job.get("k") == value


def _count_arena_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the values this process copies out of a node's mapping, as it copies them."""
    from pocketlib.client.arena import SharedArena

    copied: list[int] = []
    real = SharedArena.copy_verified

    def counted(self: SharedArena, extents: Any, copy: Any, expected: int) -> Any:
        copied.append(sum(n for _, n in extents))
        return real(self, extents, copy, expected)

    monkeypatch.setattr(SharedArena, "copy_verified", counted)
    return copied


def test_get_many_copies_large_values_out_of_the_mapping(
    local_job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MULTI_GET from a co-located client: values above 64 KiB come as places in the mapping
    (copied and checked here), smaller ones inline, misses left out; every lease is given
    back, and a take frees the space."""
    values = {f"s{i}": os.urandom(100 + i) for i in range(5)}
    values |= {f"l{i}": os.urandom(300 * 1024 + i) for i in range(6)}
    values["z"] = os.urandom(150 * 1024) + bytes(250 * 1024)  # compressed: about 150 KiB
    local_job.put_many({k: v for k, v in values.items() if k != "z"})
    local_job.put("z", values["z"], compress=True)
    copied = _count_arena_copies(monkeypatch)
    got = local_job.get_many([*values, "missing"])
    assert got == values
    assert len(copied) == 7  # the six large values and z, as stored (compressed)
    assert set(copied) >= {300 * 1024 + i for i in range(6)}
    assert 64 * 1024 < min(set(copied) - {300 * 1024 + i for i in range(6)}) < 300 * 1024
    charged = lambda: tier_stats(local_job)["used_by_job"].get(local_job.name, 0)  # noqa: E731
    wait_until(lambda: tier_stats(local_job)["used"] == charged(), what="leases released")
    taken = local_job.get_many([f"l{i}" for i in range(6)], delete_after_read=True)
    assert taken == {f"l{i}": values[f"l{i}"] for i in range(6)}
    assert not any(local_job.exists(f"l{i}") for i in range(6))
    wait_until(lambda: tier_stats(local_job)["used"] == charged(), what="taken space freed")
    assert local_job.get_many([f"s{i}" for i in range(5)]) == {
        f"s{i}": values[f"s{i}"] for i in range(5)
    }


def test_get_many_refuses_a_corrupted_value_in_the_mapping_and_stays_in_step(
    local_job: pocketlib.Job,
) -> None:
    from pocketlib.errors import ChecksumError

    size = 400 * 1024
    good, bad = os.urandom(size), os.urandom(size)
    local_job.put_many({"good": good, "bad": bad})
    arena = local_job.client.arena(local_job.router.nodes[0])
    assert arena is not None
    with local_job.get_buffer("bad") as buf:
        offset = bytes(arena.view).find(bytes(buf.view[:64]))
    assert offset >= 0
    arena.view[offset + 7] ^= 0xFF
    try:
        with pytest.raises(ChecksumError):
            local_job.get_many(["good", "bad"])
    finally:
        arena.view[offset + 7] ^= 0xFF
    assert local_job.get_many(["good", "bad"]) == {"good": good, "bad": bad}
    charged = lambda: tier_stats(local_job)["used_by_job"].get(local_job.name, 0)  # noqa: E731
    wait_until(lambda: tier_stats(local_job)["used"] == charged(), what="leases released")


def test_get_many_without_the_mapping_goes_through_the_socket(
    node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    copied = _count_arena_copies(monkeypatch)
    with pocketlib.connect([str(node.address)], job=f"socket-{os.getpid()}") as job:
        values = {f"l{i}": os.urandom(300 * 1024) for i in range(3)}
        job.put_many(values)
        assert job.get_many(list(values)) == values
        assert copied == []
        job.purge()


def test_a_node_without_shared_memory_answers_a_shared_multi_get_inline(
    local_job: pocketlib.Job, tmp_path: Path
) -> None:
    """Flag SHARED on a MULTI_GET is a request, not a demand: an HDD node (no mapping to
    share) answers every value inline, and the client takes them as they come."""
    from pocketlib.bodies import encode_keys
    from pocketlib.client import pipeline
    from pocketlib.protocol import Op

    arena = local_job.client.arena(local_job.router.nodes[0])  # a real arena, of another node
    assert arena is not None
    with (
        NodeProcess("hdd", "64MiB", extra_args=["--path", str(tmp_path)]) as hdd,
        pocketlib.connect([str(hdd.address)], job=f"hdd-{os.getpid()}") as job,
    ):
        values = {f"l{i}": os.urandom(300 * 1024) for i in range(2)}
        job.put_many(values)
        node = str(hdd.address)
        body = [encode_keys([k.encode() for k in values])]
        got = pipeline.pipeline(job.client.pools[node], Op.MULTI_GET, job._job,
                                job._tokens[node], [body], arena=arena)  # fmt: skip
        assert {e.key.decode(): bytes(e.value) for e in got} == values
        assert job.get("l0") == values["l0"]  # the connection is still in step
        job.purge()


def test_a_client_that_hangs_up_holding_a_batch_of_leases_frees_them(
    local_job: pocketlib.Job,
) -> None:
    """A MULTI_GET's leases are the connection's: taken values (delete-after-read) keep
    their space until released, and a connection that closes without SHM_RELEASE gives
    them back."""
    from pocketlib.bodies import decode_entries, encode_keys
    from pocketlib.config import Address, Timeouts
    from pocketlib.connection import Connection
    from pocketlib.protocol import Flag, Op, encode_request

    node = local_job.router.nodes[0]
    charged = lambda: tier_stats(local_job)["used_by_job"].get(local_job.name, 0)  # noqa: E731
    before = tier_stats(local_job)["used"] - charged()
    values = {f"t{i}": os.urandom(200 * 1024) for i in range(3)}
    local_job.put_many(values)
    conn = Connection(Address.parse(node), Timeouts())
    keys = encode_keys([k.encode() for k in values])
    flags = Flag.SHARED | Flag.DELETE_AFTER_READ
    head = encode_request(Op.MULTI_GET, 7, local_job._job, local_job._tokens[node],
                          length=len(keys), flags=flags)  # fmt: skip
    conn.send([head, keys])
    h = conn.read_header(7)
    entries = decode_entries(conn.read_body(h.length))
    assert [e.flags & Flag.SHARED for e in entries] == [Flag.SHARED] * 3
    assert not any(local_job.exists(k) for k in values)  # taken...
    assert tier_stats(local_job)["used"] - charged() >= before + 3 * 200 * 1024  # ...but held
    conn.close()
    wait_until(lambda: tier_stats(local_job)["used"] - charged() == before,
               what="the closed connection's leases freed")  # fmt: skip
