"""GET_RANGES (many byte ranges of a value in one answer) and COPY (a copy made on the node)."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator

import pytest
from _helpers import wait_until

import pocketlib
from pocketlib import JobHints, LocalCluster, connection
from pocketlib.bodies import MAX_RANGES, RANGE_ENTRY
from pocketlib.client import ranges
from pocketlib.errors import (
    ChecksumError,
    DrainingError,
    InvalidKeyError,
    NotFoundError,
    RequestError,
)
from pocketlib.filesystem import PocketFileSystem
from pocketlib.protocol import RESPONSE_HEADER, Op, Status, encode_request, unpack_response

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def two() -> Iterator[tuple[LocalCluster, pocketlib.Job]]:
    """A job on two nodes, with striping from 1 MiB."""
    with LocalCluster({"dram": 2}, node_capacity="96MiB", autoscale=False, tick=0.2) as cl:
        client = cl.client()
        job = client.register_job("rc", JobHints(capacity="128MiB"))
        assert len(job.ticket.maps[-1].weights) == 2
        yield cl, job
        job.deregister()
        client.close()


STRIPE = 64 * 1024


def striping(job: pocketlib.Job) -> pocketlib.Job:
    """The same job with values above 64 KiB striped (its two nodes share a host, so the
    controller leaves its values whole)."""
    return pocketlib.Job(job.client, dataclasses.replace(job.ticket, stripe_size=STRIPE),
                         job._tokens)  # fmt: skip


def ops(job: pocketlib.Job, op: Op) -> int:
    """How many requests of ``op`` the job's nodes have served."""
    return sum(s["ops"].get(op.name.lower(), 0) for s in job.stats().values())


def objects(job: pocketlib.Job) -> int:
    """Objects the job's nodes hold, chunks of striped values included."""
    name = job.ticket.job
    return sum(s["tier"]["objects_by_job"].get(name, 0) for s in job.stats().values())


def keys_on(job: pocketlib.Job, node: str, n: int, prefix: str = "k") -> list[str]:
    found = (f"{prefix}{i}" for i in range(10_000))
    return [k for k in found if job.router.write_node(k.encode()) == node][:n]


def test_many_ranges_of_many_keys_come_back_exact(two: tuple[LocalCluster, pocketlib.Job]) -> None:
    _, job = two
    values = {f"v{i}": os.urandom(200_000 + i) for i in range(6)}
    job.put_many(values)
    wanted = [(k, (i * 7919) % 150_000, (i * 7919) % 150_000 + (i % 5000)) for i in range(3000)
              for k in [f"v{i % 6}"]]  # fmt: skip
    wanted += [("v0", 199_990, 300_000), ("v1", 5, 5), ("v2", 250_000, 260_000)]  # clamped
    before = ops(job, Op.GET_RANGES)
    got = job.get_ranges(wanted)
    assert got == [values[k][s:e] for k, s, e in wanted]
    # 3,003 ranges of 6 keys: each key's ranges go in requests of at most RANGES_PER_REQUEST.
    per_key = [sum(1 for k, _, _ in wanted if k == key) for key in values]
    expected = sum(-(-n // ranges.RANGES_PER_REQUEST) for n in per_key)
    assert ops(job, Op.GET_RANGES) - before == expected


def test_a_large_answer_is_cut_into_several_requests(
    two: tuple[LocalCluster, pocketlib.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = two
    data = os.urandom(900_000)
    job.put("big", data)
    monkeypatch.setattr(ranges, "ANSWER_BYTES", 100_000)
    monkeypatch.setattr(ranges, "REQUEST_BYTES", 200)  # and few requests in flight
    wanted = [("big", i * 30_000, i * 30_000 + 40_000) for i in range(25)]
    before = ops(job, Op.GET_RANGES) + ops(job, Op.GET)
    assert job.get_ranges(wanted) == [data[s:e] for _, s, e in wanted]
    assert ops(job, Op.GET_RANGES) + ops(job, Op.GET) - before >= 10  # 25 x 40 kB / 100 kB


def test_compressed_striped_and_missing_values_fall_back_to_single_reads(
    two: tuple[LocalCluster, pocketlib.Job],
) -> None:
    _, job = two
    job = striping(job)
    plain = bytes(range(256)) * 64
    job.put("z", plain, compress=True)
    striped = os.urandom(3 * STRIPE + 123)
    job.put("s", striped)
    got = job.get_ranges([("z", 3, 9), ("z", 100, 90_000), ("s", 5, 50),
                          ("s", len(striped) - 10, len(striped) + 10)])  # fmt: skip
    assert got == [plain[3:9], plain[100:90_000], striped[5:50], striped[-10:]]
    with pytest.raises(NotFoundError):
        job.get_ranges([("z", 0, 1), ("nothing", 0, 1), ("nothing", 1, 2)])
    with pytest.raises(RequestError, match="bad range"):
        job.get_ranges([("z", 5, 1)])


def raw_request(
    job: pocketlib.Job, node: str, op: Op, key: bytes, body: bytes
) -> tuple[int, bytes]:
    """One request on a fresh socket, then a PING on it: (status, body), and the PING's status
    (the connection must stay in step after a refusal)."""
    host, port = node.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(encode_request(op, 1, job._job, job._tokens[node], key, length=len(body))
                     + body + encode_request(Op.PING, 2))  # fmt: skip
        f = sock.makefile("rb")
        h = unpack_response(f.read(RESPONSE_HEADER.size))
        answer = f.read(h.length)
        ping = unpack_response(f.read(RESPONSE_HEADER.size))
        assert ping.status == Status.OK
        assert ping.request_id == 2
        return h.status, answer


def test_malformed_range_requests_are_refused_clearly(
    two: tuple[LocalCluster, pocketlib.Job],
) -> None:
    _, job = two
    node = job.router.write_node(b"m")
    job.put("m", b"x" * 1000)
    status, msg = raw_request(job, node, Op.GET_RANGES, b"m", b"\x00" * 15)
    assert status == RequestError.status
    assert b"not a list of ranges" in msg
    status, msg = raw_request(
        job, node, Op.GET_RANGES, b"m", RANGE_ENTRY.pack(0, 1) * (MAX_RANGES + 1)
    )
    assert status == RequestError.status
    assert b"limit" in msg
    big = keys_on(job, node, 1, prefix="m-big")[0]
    job.put(big, b"y" * MiB)
    huge = RANGE_ENTRY.pack(0, MiB) * 300  # more than one answer may carry
    status, msg = raw_request(job, node, Op.GET_RANGES, big.encode(), huge)
    assert status == RequestError.status
    assert b"at most" in msg
    status, _ = raw_request(job, node, Op.COPY, b"m", b"\xff\xfe")
    assert status == InvalidKeyError.status
    assert job.get("m") == b"x" * 1000  # nothing harmed


def test_a_copy_on_one_node_is_made_there(two: tuple[LocalCluster, pocketlib.Job]) -> None:
    _, job = two
    node = job.router.nodes[0]
    src, dst = keys_on(job, node, 2, prefix="c")
    data = os.urandom(2 * 1024 * 1024 - 5)
    job.put(src, data)
    puts, copies = ops(job, Op.PUT), ops(job, Op.COPY)
    job.copy(src, dst)
    assert job.get(dst) == data
    assert job.get(src) == data
    assert ops(job, Op.COPY) == copies + 1
    assert ops(job, Op.PUT) == puts
    job.put(src, b"changed")
    assert job.get(dst) == data  # a copy, not a link
    cz, cz2 = keys_on(job, node, 2, prefix="cz")
    job.put(cz, b"abc" * 1000, compress=True)
    job.copy(cz, cz2)  # as stored: still compressed
    assert job.get(cz2) == b"abc" * 1000
    assert job.stat(cz2).compressed
    with pytest.raises(NotFoundError):
        job.copy("no-such-key", dst)
    assert job.get(dst) == data


def test_copies_across_nodes_and_of_striped_values(two: tuple[LocalCluster, pocketlib.Job]) -> None:
    _, job = two
    job = striping(job)
    a, b = job.router.nodes
    src = keys_on(job, a, 1, prefix="x")[0]
    dst = keys_on(job, b, 1, prefix="y")[0]
    job.put(src, b"across")
    job.copy(src, dst)
    assert job.get(dst) == b"across"
    striped = os.urandom(3 * STRIPE)
    job.put("st", striped)
    job.copy("st", "st2")
    assert job.get("st2") == striped
    job.delete("st")
    assert job.get("st2") == striped  # its own chunks
    # A node-side copy onto a striped value deletes that value's chunks.
    target = keys_on(job, a, 3, prefix="t")
    job.put(target[1], b"small")
    before = objects(job)
    job.put(target[0], striped)
    assert objects(job) == before + 4  # a manifest and three chunks
    job.copy(target[1], target[0])
    assert job.get(target[0]) == b"small"
    assert objects(job) == before + 1  # the replaced value's chunks are gone


def test_fsspec_cp_file_copies_on_the_node(two: tuple[LocalCluster, pocketlib.Job]) -> None:
    _, job = two
    fs = PocketFileSystem(job.ticket.to_json())
    a, b = keys_on(job, job.router.nodes[1], 2, prefix="d/f")
    fs.pipe(f"rc/{a}", b"one")
    copies = ops(job, Op.COPY)
    fs.cp_file(f"rc/{a}", f"rc/{b}")
    assert fs.cat(f"rc/{b}") == b"one"
    assert ops(job, Op.COPY) == copies + 1
    with pytest.raises(FileNotFoundError):
        fs.cp_file("rc/d/none", "rc/d/c")


def test_a_detailed_listing_says_what_stat_says_in_a_request_per_page(
    two: tuple[LocalCluster, pocketlib.Job],
) -> None:
    _, job = two
    job = striping(job)
    values = {f"li/{i:03d}": os.urandom(i * 10) for i in range(250)}
    job.put_many(values)
    job.put("li/z-packed", b"a" * 5000, compress=True)
    job.put("li/z-striped", os.urandom(2 * STRIPE + 1))
    stats, lists = ops(job, Op.STAT), ops(job, Op.LIST)
    infos = list(job.list_info("li/", page_size=100))
    assert [i.key for i in infos] == sorted([*values, "li/z-packed", "li/z-striped"])
    # One STAT, for the striped value (its size is in its manifest); pages of 100 per node.
    assert ops(job, Op.STAT) - stats == 1
    assert ops(job, Op.LIST) - lists <= 2 * (250 // 100 + 2)
    for info in infos:
        assert info == job.stat(info.key)  # the same, field by field
    packed = next(i for i in infos if i.key == "li/z-packed")
    assert packed.compressed
    assert packed.size < packed.length == 5000  # stored size; the value's own length
    fs = PocketFileSystem(job.ticket.to_json())
    stats = ops(job, Op.STAT)
    listed = fs.ls("rc/li", detail=True)
    assert ops(job, Op.STAT) - stats <= 2  # (not one per file)
    sizes = {e["name"]: e["size"] for e in listed}
    assert sizes["rc/li/007"] == 70
    assert sizes["rc/li/z-striped"] == 2 * STRIPE + 1
    assert fs.find("rc/li", detail=True)["rc/li/010"]["size"] == 100


def test_a_checksum_error_in_a_pipelined_batch_leaves_no_connection_out_of_step(
    two: tuple[LocalCluster, pocketlib.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = two
    node = job.router.nodes[0]
    keys = keys_on(job, node, 4, prefix="cs")
    for k in keys:
        job.put(k, k.encode() * 1000)
    real = connection.checksum
    calls = iter(range(1_000_000))
    monkeypatch.setattr(connection, "checksum", lambda d: 0 if next(calls) == 0 else real(d))
    with pytest.raises(ChecksumError):
        job.get_ranges([(k, 0, 100) for k in keys])
    monkeypatch.setattr(connection, "checksum", real)
    for k in keys:  # every pooled connection answers its own requests
        assert job.get_range(k, 0, 50) == (k.encode() * 1000)[:50]


def test_a_fill_that_fails_gives_the_reserved_space_back(
    two: tuple[LocalCluster, pocketlib.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = two
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1")
    with pocketlib.attach(job.ticket.to_json()) as local:
        node = local.router.nodes[0]
        if local.client.arena(node) is None:
            pytest.skip("no co-located mapping here")
        key = keys_on(local, node, 1, prefix="pf")[0]

        def fill(view: memoryview) -> None:
            local.get("no-such-key")  # raises NotFoundError midway

        for _ in range(3):  # each would hold 40 MiB of the node's 96 MiB if not given back
            with pytest.raises(NotFoundError):
                local.put_filled(key, 40 * MiB, fill)
        local.put_filled(key, 40 * MiB, lambda v: v.__setitem__(slice(None), bytes(len(v))))
        assert local.stat(key).size == 40 * MiB
        local.delete(key)


def test_a_draining_node_refuses_copies(two: tuple[LocalCluster, pocketlib.Job]) -> None:
    cl, job = two
    node = job.router.nodes[0]
    src, dst = keys_on(job, node, 2, prefix="dr")
    job.put(src, b"hello")
    record = next(r for r in cl.controller.nodes.values() if r.address == node)
    with cl.controller.lock:
        record.state = "draining"
    try:
        wait_until(lambda: draining(job, node), what="the node to learn it is draining")
        with pytest.raises(DrainingError):
            job._copy_at(node, src.encode(), dst.encode())
        assert not job.exists(dst)
    finally:
        with cl.controller.lock:
            record.state = "active"
        wait_until(lambda: not draining(job, node), what="the node to take data again")


def draining(job: pocketlib.Job, node: str) -> bool:
    return bool(job.stats()[node]["draining"])


def test_ranges_of_one_key_in_several_requests_come_from_one_value(
    two: tuple[LocalCluster, pocketlib.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = two
    old, new = b"a" * 10_000, b"b" * 10_000
    job.put("ov", old)
    monkeypatch.setattr(ranges, "RANGES_PER_REQUEST", 4)  # 12 ranges: three requests
    # One request in flight at a time, so the first is answered before the second is sent.
    monkeypatch.setattr(ranges, "REQUEST_BYTES", 1)
    answered = 0
    real = ranges._read

    def read(*args: object) -> int:
        nonlocal answered
        size = real(*args)  # type: ignore[arg-type]
        answered += 1
        if answered == 1:  # the key is overwritten between its first and second request
            job.put("ov", new)
        return size

    monkeypatch.setattr(ranges, "_read", read)
    wanted = [("ov", i * 100, i * 100 + 10) for i in range(12)]
    with pytest.raises(pocketlib.ConflictError, match="changed during the read"):
        job.get_ranges(wanted)
    monkeypatch.setattr(ranges, "_read", real)
    assert job.get_ranges(wanted) == [new[s:e] for _, s, e in wanted]  # (connections in step)


def test_a_compressed_value_is_read_once_for_all_its_ranges(
    two: tuple[LocalCluster, pocketlib.Job],
) -> None:
    _, job = two
    value = bytes(range(256)) * 400
    job.put("zz", value, compress=True)
    gets = ops(job, Op.GET) + ops(job, Op.SHM_GET)
    wanted = [("zz", i * 1000, i * 1000 + 50) for i in range(20)]
    assert job.get_ranges(wanted) == [value[s:e] for _, s, e in wanted]
    # one GET_RANGES answered "compressed", then one whole read (not twenty)
    assert ops(job, Op.GET) + ops(job, Op.SHM_GET) - gets == 1
