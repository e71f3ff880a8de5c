"""The client API over a real node in a child process."""

from __future__ import annotations

import array
import glob
import os
import socket
import threading
import time

import pytest
from _helpers import node_stats, wait_until

import pocketlib
from pocketlib import CapacityError, ConflictError, NotFoundError, RequestError
from pocketlib.control.processes import NodeProcess
from pocketlib.protocol import REQUEST_HEADER, checksum, encode_response, unpack_request

KiB = 1024
MiB = 1024 * KiB


# -- single objects ----------------------------------------------------------------------------


def test_put_get(job: pocketlib.Job) -> None:
    job.put("a", b"alpha")
    job.put("dir/b", b"beta")
    assert job.get("a") == b"alpha"
    assert job.get("dir/b") == b"beta"
    with pytest.raises(NotFoundError):
        job.get("missing")
    with pytest.raises(KeyError):  # NotFoundError is also a KeyError
        job.get("missing")


def test_unicode_keys(job: pocketlib.Job) -> None:
    job.put("ключ/数据/🔑", b"unicode")
    assert job.get("ключ/数据/🔑") == b"unicode"
    assert list(job.list("ключ/")) == ["ключ/数据/🔑"]


@pytest.mark.parametrize("size", [0, 1, 1023, MiB + 3, 16 * MiB])
def test_values_of_many_sizes(job: pocketlib.Job, size: int) -> None:
    data = os.urandom(size)
    job.put("v", data)
    assert job.get("v") == data
    info = job.stat("v")
    assert info.size == size
    assert info.checksum == checksum(data)
    buf = bytearray(size + 10)
    assert job.get_into("v", buf) == size
    assert buf[:size] == data
    assert job.get_range("v", 0, size) == data


def test_get_into(job: pocketlib.Job) -> None:
    data = os.urandom(100_000)
    job.put("k", data)
    exact = bytearray(len(data))
    assert job.get_into("k", exact) == len(data)
    assert exact == data
    view = memoryview(bytearray(200_000))[50_000:]
    assert job.get_into("k", view) == len(data)
    assert view[: len(data)] == data
    with pytest.raises(RequestError):
        job.get_into("k", b"read-only buffer" * 10_000)
    with pytest.raises(NotFoundError):
        job.get_into("missing", exact)


def test_get_into_too_small_buffer_keeps_the_connection_working(job: pocketlib.Job) -> None:
    data = os.urandom(300_000)
    job.put("k", data)
    job.put("other", b"still here")
    before = node_stats(job)["connections_total"]
    with pytest.raises(RequestError):
        job.get_into("k", bytearray(len(data) - 1))
    # The refused value was drained: the next requests on the same connection are in step.
    assert job.get("other") == b"still here"
    assert job.get("k") == data
    job.put("after", b"works")
    assert job.get("after") == b"works"
    assert job.exists("k")  # the object was left as it was
    assert node_stats(job)["connections_total"] == before, "the connection was replaced"


def test_get_range_has_slice_semantics(job: pocketlib.Job) -> None:
    data = os.urandom(1000)
    job.put("k", data)
    for start, end in [
        (0, 10), (10, 20), (990, 1000), (990, 2000), (0, 1000), (0, 5000),
        (500, 500), (1000, 1010), (5000, 6000), (0, 0), (999, 1000),
    ]:  # fmt: skip
        assert job.get_range("k", start, end) == data[start:end], (start, end)
    with pytest.raises(RequestError):
        job.get_range("k", 10, 5)
    with pytest.raises(RequestError):
        job.get_range("k", -1, 5)
    with pytest.raises(NotFoundError):
        job.get_range("missing", 0, 1)


def test_get_range_of_a_compressed_value(job: pocketlib.Job) -> None:
    data = b"compressible " * 10_000
    job.put("k", data, compress=True)
    assert job.get_range("k", 100, 200) == data[100:200]
    assert job.get_range("k", len(data) - 5, len(data) + 5) == data[-5:]


def test_stat_fields(job: pocketlib.Job) -> None:
    data = os.urandom(12_345)
    before = time.time()
    job.put("k", data)
    info = job.stat("k")
    assert info.key == "k"
    assert info.size == len(data)
    assert info.checksum == checksum(data)
    assert info.compressed is False
    assert info.expires is None
    assert before - 5 <= info.created <= time.time() + 5
    new = os.urandom(10)
    job.put("k", new)
    info2 = job.stat("k")
    assert info2.version > info.version
    assert info2.size == 10
    assert info2.checksum == checksum(new)
    job.put("ttl", b"x", ttl=300)
    expires = job.stat("ttl").expires
    assert expires is not None
    assert expires > job.stat("ttl").created
    with pytest.raises(NotFoundError):
        job.stat("missing")


def test_exists_and_delete(job: pocketlib.Job) -> None:
    assert not job.exists("k")
    job.put("k", b"v")
    assert job.exists("k")
    assert job.delete("k") is True
    assert not job.exists("k")
    assert job.delete("k") is False  # a missing key is not an error
    assert job.delete("never-there") is False
    with pytest.raises(NotFoundError):
        job.get("k")


def test_memoryview_and_bytearray_inputs(job: pocketlib.Job) -> None:
    job.put("ba", bytearray(b"from a bytearray"))
    job.put("mv", memoryview(b"xxfrom a memoryviewxx")[2:-2])
    ints = array.array("i", range(1000))
    job.put("arr", memoryview(ints))
    job.put("arr-direct", ints)
    assert job.get("ba") == b"from a bytearray"
    assert job.get("mv") == b"from a memoryview"
    assert job.get("arr") == ints.tobytes()
    assert job.get("arr-direct") == ints.tobytes()
    assert job.stat("arr").size == 4000
    job.put_many({"m1": bytearray(b"one"), "m2": memoryview(b"two")})
    assert job.get_many(["m1", "m2"]) == {"m1": b"one", "m2": b"two"}


def test_put_does_not_alias_the_caller_buffer(job: pocketlib.Job) -> None:
    small = bytearray(b"small value")
    big = bytearray(os.urandom(2 * MiB))
    expected = bytes(big)
    job.put("small", small)
    job.put("big", big)
    small[:] = b"X" * len(small)
    big[:] = bytes(len(big))
    assert job.get("small") == b"small value"
    assert job.get("big") == expected
    got = bytearray(job.get("small"))
    got[:] = b"Y" * len(got)
    assert job.get("small") == b"small value"


def test_compressed_roundtrip(job: pocketlib.Job) -> None:
    data = b"abcdefgh" * 100_000
    job.put("c", data, compress=True)
    assert job.get("c") == data
    info = job.stat("c")
    assert info.compressed is True
    assert info.size < len(data)  # the stored, compressed size
    buf = bytearray(len(data))
    assert job.get_into("c", buf) == len(data)
    assert buf == data
    with pytest.raises(RequestError):
        job.get_into("c", bytearray(len(data) - 1))
    job.put_many({"c1": data, "c2": b""}, compress=True)
    assert job.get_many(["c1", "c2"]) == {"c1": data, "c2": b""}
    assert job.stat("c1").compressed
    job.put("c", b"plain")
    assert job.stat("c").compressed is False
    assert job.get("c") == b"plain"


# -- many objects ------------------------------------------------------------------------------


def test_list_pages_through_every_key(job: pocketlib.Job) -> None:
    keys = [f"data/{i:03d}" for i in range(50)]
    job.put_many({k: k.encode() for k in reversed(keys)})
    job.put_many({"other/1": b"x", "dat": b"x", "datb": b"x"})
    listed = list(job.list("data/", page_size=7))
    assert listed == sorted(keys)
    assert list(job.list("data/", page_size=1)) == sorted(keys)
    assert list(job.list("data/", page_size=50)) == sorted(keys)
    assert list(job.list(page_size=7)) == sorted([*keys, "other/1", "dat", "datb"])
    assert list(job.list("nothing/")) == []


def test_delete_prefix(job: pocketlib.Job) -> None:
    job.put_many({f"tmp/{i}": b"x" for i in range(23)})
    job.put_many({f"keep/{i}": b"y" for i in range(5)})
    assert job.delete_prefix("tmp/") == 23
    assert list(job.list("tmp/")) == []
    assert len(list(job.list())) == 5
    assert job.delete_prefix("tmp/") == 0


def test_put_many_get_many(job: pocketlib.Job) -> None:
    items = {f"k{i}": os.urandom(i * 37) for i in range(40)}
    job.put_many(items)
    got = job.get_many([*items, "missing-1", "missing-2"])
    assert got == items  # missing keys are left out
    assert job.get_many([]) == {}
    assert job.get("k39") == items["k39"]


def test_put_many_in_several_batches(job: pocketlib.Job) -> None:
    # More keys than one frame holds (256), more bytes than one frame holds (1 MiB), and
    # values larger than a frame, which travel alone.
    many = {f"small/{i:05d}": i.to_bytes(4, "little") for i in range(2500)}
    job.put_many(many)
    large = {f"large/{i}": os.urandom(MiB // 2 + i) for i in range(6)}
    large |= {f"larger/{i}": os.urandom(MiB + i) for i in range(2)}
    job.put_many(large)
    assert job.get_many(many) == many
    assert job.get_many(large) == large
    assert len(list(job.list("small/"))) == 2500


def test_a_multi_put_takes_effect_in_entry_order(job: pocketlib.Job) -> None:
    """Small values of a MULTI_PUT are stored in runs, a large one on its own: entries of
    one key, small and large mixed, still leave the last one stored, and each answer is
    that entry's."""
    from pocketlib.bodies import Entry
    from pocketlib.client import batch, pipeline
    from pocketlib.protocol import Op

    small1, large, small2 = b"s" * 10, os.urandom(64 * 1024), b"t" * 20
    node = job.router.nodes[0]

    def multi_put(values: list[bytes]) -> list[Entry]:
        items: list[batch.Item] = [(b"k", v, 0) for v in values]
        return pipeline.pipeline(job.client.pools[node], Op.MULTI_PUT, job._job,
                              job._tokens[node], batch._frames(items))  # fmt: skip

    answers = multi_put([small1, large, small2])
    assert [a.status for a in answers] == [0, 0, 0]
    assert answers[0].checksum < answers[1].checksum < answers[2].checksum  # versions, in order
    assert job.get("k") == small2
    multi_put([small1, large])
    assert job.get("k") == large


def test_get_many_delete_after_read(job: pocketlib.Job) -> None:
    job.put_many({"a": b"1", "b": b"2", "c": b"3"})
    assert job.get_many(["a", "b"], delete_after_read=True) == {"a": b"1", "b": b"2"}
    assert not job.exists("a")
    assert not job.exists("b")
    assert job.get("c") == b"3"


# -- lifetimes ---------------------------------------------------------------------------------


def test_ttl_expiry(job: pocketlib.Job) -> None:
    job.put("brief", b"gone soon", ttl=0.3)
    job.put("stays", b"here")
    job.put_many({"brief-many": b"x"}, ttl=0.3)
    wait_until(lambda: not job.exists("brief"), what="expiry of a put with ttl")
    wait_until(lambda: not job.exists("brief-many"), what="expiry of a put_many with ttl")
    with pytest.raises(NotFoundError):
        job.get("brief")
    assert list(job.list()) == ["stays"]
    # The reaper frees the space too, not only hides the key.
    wait_until(
        lambda: node_stats(job)["tier"]["objects_by_job"].get(job.name) == 1,
        what="reaping of expired objects",
    )


def test_ttl_must_be_positive(job: pocketlib.Job) -> None:
    for ttl in (0, -1):
        with pytest.raises(RequestError):
            job.put("k", b"v", ttl=ttl)
    assert not job.exists("k")


def test_delete_after_read_frees_the_object(job: pocketlib.Job) -> None:
    base = node_stats(job)["tier"]["used"]
    data = os.urandom(4 * MiB)
    job.put("once", data)
    stats = node_stats(job)["tier"]
    assert stats["used_by_job"][job.name] >= len(data)
    assert stats["used"] >= base + len(data)
    assert job.get("once", delete_after_read=True) == data
    assert not job.exists("once")
    with pytest.raises(NotFoundError):
        job.get("once", delete_after_read=True)
    assert job.name not in node_stats(job)["tier"]["used_by_job"]
    wait_until(lambda: node_stats(job)["tier"]["used"] == base, what="space reclaimed")
    buf = bytearray(10)
    job.put("once-into", b"0123456789")
    assert job.get_into("once-into", buf, delete_after_read=True) == 10
    assert buf == b"0123456789"
    assert not job.exists("once-into")


# -- streams -----------------------------------------------------------------------------------


def test_writer_and_reader_stream_20_mib(job: pocketlib.Job) -> None:
    data = os.urandom(20 * MiB)
    with job.writer("big", chunk_size=MiB) as w:
        # Odd-sized writes, so chunks are cut from a buffer, and one larger than a chunk.
        pos = 0
        for size in (1, 300 * KiB, 3 * MiB + 7, 12_345):
            w.write(data[pos : pos + size])
            pos += size
        while pos < len(data):
            w.write(data[pos : pos + 700 * KiB])
            pos += 700 * KiB
        assert not job.exists("big"), "a streamed value must be invisible until closed"
    info = job.stat("big")
    assert info.size == len(data)
    assert info.checksum == checksum(data)
    assert job.get("big") == data
    reader = job.reader("big", chunk_size=MiB)
    got = bytearray()
    while chunk := reader.read(MiB):
        got += chunk
    assert got == data
    assert reader.read(MiB) == b""


def test_writer_of_an_exact_number_of_chunks(job: pocketlib.Job) -> None:
    data = os.urandom(4 * 64 * KiB)
    with job.writer("k", chunk_size=64 * KiB) as w:
        w.write(data)
    assert job.get("k") == data
    with job.writer("empty") as w:
        pass
    assert job.get("empty") == b""


def test_reader_reads_all_and_seeks(job: pocketlib.Job) -> None:
    data = os.urandom(3 * MiB + 11)
    job.put("k", data)
    with job.reader("k", chunk_size=MiB) as r:
        assert r.read() == data
    with job.reader("k", chunk_size=MiB) as r:
        r.seek(MiB)
        assert r.read(100) == data[MiB : MiB + 100]
        r.seek(-10, 2)
        assert r.read() == data[-10:]


def test_reader_fetches_in_ranges_of_chunk_size(job: pocketlib.Job) -> None:
    data = os.urandom(8 * MiB)
    job.put("k", data)
    gets_before = node_stats(job)["ops"].get("get", 0)
    with job.reader("k", chunk_size=MiB) as r:
        assert r.read() == data
    gets = node_stats(job)["ops"].get("get", 0) - gets_before
    assert gets <= 8 + 1, f"a reader with chunk_size 1 MiB made {gets} requests for 8 MiB"


def abandon_upload(job: pocketlib.Job, key: str, data: bytes) -> None:
    """Write ``data`` through a writer, then leave its ``with`` block by an exception."""
    with job.writer(key, chunk_size=MiB) as w:
        w.write(data)
        raise RuntimeError("abandon the upload")


def test_abandoned_writer_leaves_nothing(job: pocketlib.Job) -> None:
    base = node_stats(job)["tier"]["used"]
    with pytest.raises(RuntimeError, match="abandon"):
        abandon_upload(job, "k", os.urandom(5 * MiB + 3))
    assert not job.exists("k")
    assert list(job.list()) == []
    wait_until(lambda: node_stats(job)["tier"]["used"] == base, what="chunks freed")
    job.put("k", b"usable")
    assert job.get("k") == b"usable"


def test_abandoned_overwrite_keeps_the_old_value(job: pocketlib.Job) -> None:
    job.put("k", b"old value")
    with pytest.raises(RuntimeError, match="abandon"):
        abandon_upload(job, "k", os.urandom(2 * MiB))
    assert job.get("k") == b"old value"


def test_reader_raises_conflict_if_overwritten_mid_read(job: pocketlib.Job) -> None:
    data = os.urandom(4 * MiB)
    job.put("k", data)
    reader = job.reader("k", chunk_size=MiB)
    assert reader.read(MiB) == data[:MiB]
    job.put("k", os.urandom(4 * MiB))
    with pytest.raises(ConflictError):
        reader.read(MiB)


def test_reader_raises_conflict_if_deleted_mid_read(job: pocketlib.Job) -> None:
    data = os.urandom(2 * MiB)
    job.put("k", data)
    reader = job.reader("k", chunk_size=MiB)
    assert reader.read(MiB) == data[:MiB]
    job.delete("k")
    # Job.reader documents ConflictError when the key is overwritten *or deleted*.
    with pytest.raises(ConflictError):
        reader.read(MiB)


def test_reader_of_a_compressed_value_is_refused(job: pocketlib.Job) -> None:
    job.put("c", b"z" * 10_000, compress=True)
    with pytest.raises(RequestError):
        job.reader("c")
    with pytest.raises(NotFoundError):
        job.reader("missing")


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_are_isolated(node: NodeProcess, job: pocketlib.Job) -> None:
    job.put("shared-name", b"mine")
    with pocketlib.connect([str(node.address)], job=job.name + "-other") as other:
        try:
            assert not other.exists("shared-name")
            other.put("shared-name", b"theirs")
            assert job.get("shared-name") == b"mine"
            assert list(other.list()) == ["shared-name"]
        finally:
            other.purge()
    assert job.get("shared-name") == b"mine"


def test_purge_deletes_the_jobs_objects(node: NodeProcess) -> None:
    with pocketlib.connect([str(node.address)], job="purge-test") as j:
        j.put_many({f"k{i}": b"x" * 1000 for i in range(10)})
        assert j.purge() == 10
        stats = node_stats(j)
        assert "purge-test" not in stats["jobs"]
        assert "purge-test" not in stats["tier"]["used_by_job"]
        with pytest.raises(pocketlib.UnknownJobError):
            j.get("k0")


def test_put_many_of_a_value_larger_than_a_frame(job: pocketlib.Job) -> None:
    # Frames of entries are bounded (64 MiB) but values are not: put_many must still store
    # a value that put() stores.
    big = os.urandom(65 * MiB)
    job.put_many({"big": big, "small": b"s"})
    assert job.stat("big").size == len(big)
    assert job.get_many(["big", "small"]) == {"big": big, "small": b"s"}


# -- threads and transport ---------------------------------------------------------------------


def test_one_job_shared_by_threads(job: pocketlib.Job) -> None:
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(60):
                key = f"t{t}/{i}"
                value = os.urandom((i * 7919) % 200_000)
                job.put(key, value)
                assert job.get(key) == value
                assert job.get_range(key, 5, 50) == value[5:50]
                if i % 10 == 0:
                    assert len(list(job.list(f"t{t}/", page_size=5))) == i + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(job.list())) == 6 * 60


def test_unreachable_node_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(pocketlib.ConnectError):
        pocketlib.connect([f"127.0.0.1:{port}"], job="nobody-listens")


class FakeNode:
    """A TCP server that answers JOB_OPEN like a node, then misbehaves as told.

    ``mode`` is "silent" (never answers the next request), "partial" (answers with half a
    header, then nothing) or "deaf" (stops reading altogether).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn: socket.socket) -> int:
        head = conn.recv(REQUEST_HEADER.size, socket.MSG_WAITALL)
        h = unpack_request(head)
        if h.var_len + h.body_len:
            conn.recv(h.var_len + h.body_len, socket.MSG_WAITALL)
        return h.request_id

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            rid = self._read_request(conn)  # JOB_OPEN
            conn.sendall(encode_response(rid, length=16) + b"T" * 16)
            if self.mode != "deaf":
                rid = self._read_request(conn)
            if self.mode == "partial":
                conn.sendall(encode_response(rid, length=100)[:20])
            self.release.wait(30)

    def close(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.server.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["silent", "partial"])
def test_a_node_that_stops_answering_is_a_timeout(mode: str) -> None:
    fake = FakeNode(mode)
    try:
        job = pocketlib.connect([fake.address], job="j", timeouts=pocketlib.Timeouts(io=0.5))
        with pytest.raises(pocketlib.PocketTimeoutError):
            job.get("k")
        job.close()
    finally:
        fake.close()


@pytest.mark.timeout(30)
def test_a_node_that_stops_reading_is_a_timeout() -> None:
    fake = FakeNode("deaf")
    try:
        job = pocketlib.connect([fake.address], job="j", timeouts=pocketlib.Timeouts(io=0.5))
        with pytest.raises(pocketlib.PocketTimeoutError):
            job.put("k", bytes(64 * MiB))  # more than the socket buffers hold
        job.close()
    finally:
        fake.close()


@pytest.mark.timeout(60)
def test_a_killed_node_is_a_transport_error() -> None:
    proc = NodeProcess("dram", "16MiB")
    try:
        job = pocketlib.connect([str(proc.address)], job="doomed")
        job.put("k", b"v")
        proc.kill()
        with pytest.raises(pocketlib.TransportError):
            job.get("k")
        with pytest.raises(pocketlib.TransportError):
            job.put("k", b"v")
        job.close()
    finally:
        proc.stop()
        for path in glob.glob(f"/dev/shm/pocket-{proc.pid}-*"):
            os.unlink(path)


def test_lone_surrogate_key_is_an_invalid_key(job: pocketlib.Job) -> None:
    job.put("good", b"v")
    with pytest.raises(pocketlib.InvalidKeyError):
        job.put("bad-\ud800", b"v")
    # Whatever the refusal did to the connection, the next request is served, including one
    # that the client may not retry.
    assert job.get("good", delete_after_read=True) == b"v"


def test_over_long_prefix_is_an_invalid_key(job: pocketlib.Job) -> None:
    job.put("good", b"v")
    with pytest.raises(pocketlib.InvalidKeyError):
        list(job.list("p" * 1025))
    with pytest.raises(pocketlib.InvalidKeyError):
        job.delete_prefix("p" * 1025)
    assert job.get("good", delete_after_read=True) == b"v"


# -- a value spread over several extents of a fragmented tier ----------------------------------


def test_a_value_split_over_a_fragmented_tier(small_node: NodeProcess) -> None:
    piece = 256 * KiB
    with pocketlib.connect([str(small_node.address)], job="fragmented") as j:
        try:
            (stats,) = j.stats().values()
            holes = (stats["tier"]["capacity"] - stats["tier"]["used"]) // piece
            j.put_many({f"fill/{i:03d}": bytes([i % 256]) * piece for i in range(holes)})
            with pytest.raises(CapacityError):
                j.put("no-room", b"x" * piece)
            for i in range(0, holes, 2):
                j.delete(f"fill/{i:03d}")
            # No single free block holds this value: it is stored in 256 KiB pieces.
            data = os.urandom(piece * (holes // 2 - 1) + 12_345)
            j.put("split", data)
            assert j.get("split") == data
            for start in (piece - 10, 3 * piece - 1, len(data) - 100):
                assert j.get_range("split", start, start + 300) == data[start : start + 300]
            assert j.get_range("split", 10, len(data) - 10) == data[10:-10]
            buf = bytearray(len(data))
            assert j.get_into("split", buf) == len(data)
            assert buf == data
            assert j.get_many(["split"]) == {"split": data}
            with j.reader("split", chunk_size=piece + 7) as r:
                assert r.read() == data
            for i in range(1, holes, 2):
                assert j.get(f"fill/{i:03d}") == bytes([i % 256]) * piece
            assert j.get("split", delete_after_read=True) == data
        finally:
            j.purge()


def test_streamed_value_with_a_ttl_expires(job: pocketlib.Job) -> None:
    with job.writer("brief", ttl=0.3, chunk_size=64 * KiB) as w:
        w.write(os.urandom(200 * KiB))
    assert job.stat("brief").expires is not None
    wait_until(lambda: not job.exists("brief"), what="expiry of a streamed value")


def test_bad_arguments() -> None:
    with pytest.raises(RequestError):
        pocketlib.Client([])
    with pytest.raises(pocketlib.ConfigError):
        pocketlib.Client(["not-an-address"])


def test_empty_job_name_is_refused(node: NodeProcess) -> None:
    with pytest.raises(RequestError):
        pocketlib.connect([str(node.address)], job="")


def test_node_process_that_cannot_start() -> None:
    with pytest.raises(pocketlib.ConfigError, match="no-such-tier"):
        NodeProcess("no-such-tier", "1MiB")
