"""Bad input to a node: invalid requests, broken frames, dead clients, and racing clients.

Whatever one connection sends, the node answers it or closes that connection only; every other
client keeps being served and its data stays intact.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import xxhash
from _helpers import tier_stats, wait_until

import pocketlib
from pocketlib import (
    CapacityError,
    InvalidKeyError,
    NotFoundError,
    ProtocolError,
    TokenError,
    UnknownJobError,
    VersionError,
)
from pocketlib.bodies import Entry, encode_entries, encode_keys
from pocketlib.control.processes import NodeProcess
from pocketlib.protocol import (
    MAGIC,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    VERSION,
    Op,
    ResponseHeader,
    encode_request,
    unpack_response,
)

MiB = 1024 * 1024


def raw_header(**over: Any) -> bytes:
    """A request header packed field by field, some fields overridden."""
    fields: dict[str, Any] = {
        "magic": MAGIC, "version": VERSION, "op": int(Op.PING), "flags": 0, "key_len": 0,
        "request_id": 7, "job_len": 0, "token_len": 0, "reserved": 0, "offset": 0,
        "length": 0, "ttl_ms": 0, "arg": 0, "checksum": 0,
    }  # fmt: skip
    fields.update(over)
    return REQUEST_HEADER.pack(*fields.values())


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_response(sock: socket.socket) -> tuple[ResponseHeader, bytes]:
    head = recv_exact(sock, RESPONSE_HEADER.size)
    assert len(head) == RESPONSE_HEADER.size, "the node closed without answering"
    h = unpack_response(head)  # the node answers in its own protocol version
    return h, recv_exact(sock, h.length)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the node hung up (reads return EOF or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def raw(node: NodeProcess) -> Iterator[socket.socket]:
    sock = socket.create_connection((node.address.host, node.address.port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def bystander(job: pocketlib.Job) -> Iterator[pocketlib.Job]:
    """A well-behaved client with data, checked after the test's abuse."""
    data = {f"safe/{i}": os.urandom(1000 + i) for i in range(10)}
    job.put_many(data)
    job.put("safe/big", b"B" * (3 * MiB))
    yield job
    assert job.get_many(data) == data
    assert job.get("safe/big") == b"B" * (3 * MiB)
    job.put("after", b"still served")
    assert job.get("after") == b"still served"


# -- invalid requests through the client -------------------------------------------------------


def test_invalid_keys_are_refused(job: pocketlib.Job) -> None:
    for bad in ("", "k" * 1025, "é" * 513):
        for call in (
            lambda k: job.put(k, b"v"),
            job.get,
            job.exists,
            job.delete,
            job.stat,
            lambda k: job.get_range(k, 0, 1),
            lambda k: job.put_many({k: b"v"}),
            lambda k: job.get_many([k]),
            job.writer,
        ):
            with pytest.raises(InvalidKeyError):
                call(bad)
    job.put("k" * 1024, b"longest key")
    assert job.get("k" * 1024) == b"longest key"


def test_unknown_job(node: NodeProcess, job: pocketlib.Job) -> None:
    client = job.client
    addr = str(node.address)
    with pytest.raises(UnknownJobError):
        client.call(addr, Op.EXISTS, b"job-never-opened", b"t" * 16, b"key")
    with pytest.raises(UnknownJobError):
        client.call(addr, Op.PUT, b"job-never-opened", b"t" * 16, b"key", body=[b"x" * 100_000])
    # The refused PUT's value was read and discarded: the connection is still in step.
    job.put("k", b"v")
    assert job.get("k") == b"v"


def test_wrong_and_missing_token(node: NodeProcess, job: pocketlib.Job) -> None:
    client = job.client
    addr = str(node.address)
    name = job.name.encode()
    job.put("k", b"secret")
    for token in (b"\0" * 16, b"wrong", b""):
        with pytest.raises(TokenError):
            client.call(addr, Op.GET, name, token, b"k")
        with pytest.raises(TokenError):
            client.call(addr, Op.PUT, name, token, b"k", body=[b"overwrite" * 50_000])
        with pytest.raises(TokenError):
            client.call(addr, Op.JOB_DELETE, name, token)
    assert job.get("k") == b"secret"


_BODY_FRAMES = {
    "MULTI_GET": (Op.MULTI_GET, b"", encode_keys([b"safe/0", b"safe/1"])),
    "LIST-page-2": (Op.LIST, b"safe/", b"safe/3"),  # a later page: the cursor is the body
    "PUT": (Op.PUT, b"safe/0", b"overwrite"),
    "MULTI_PUT": (Op.MULTI_PUT, b"", b"".join(map(bytes, encode_entries([Entry(b"k", b"v")])))),
}


@pytest.mark.parametrize("refusal", ["unknown-job", "wrong-token"])
@pytest.mark.parametrize("frame", sorted(_BODY_FRAMES))
def test_a_refused_request_with_a_body_keeps_the_connection_in_step(
    raw: socket.socket, bystander: pocketlib.Job, frame: str, refusal: str
) -> None:
    # An error of a well-formed request is answered and its body read and discarded, so the
    # next request on the same connection is framed correctly (docs/protocol.md).
    op, key, body = _BODY_FRAMES[frame]
    if refusal == "unknown-job":
        job, token, status = b"never-opened-job", b"t" * 16, UnknownJobError.status
    else:
        job, token, status = bystander.name.encode(), b"wrong-token", TokenError.status
    raw.sendall(encode_request(op, 11, job, token, key, length=len(body)) + body)
    raw.sendall(encode_request(Op.PING, 12))
    h, _ = read_response(raw)
    assert (h.request_id, h.status) == (11, status)
    h, _ = read_response(raw)
    assert (h.request_id, h.status) == (12, 0), f"out of step after a refused {frame}"


def test_get_many_after_the_job_was_purged_elsewhere(node: NodeProcess) -> None:
    name = f"purged-elsewhere-{os.getpid()}"
    worker = pocketlib.connect([str(node.address)], job=name)
    try:
        worker.put_many({"a": b"1", "b": b"2"})
        with pocketlib.connect([str(node.address)], job=name) as driver:
            driver.purge()  # the driver ends the job while a worker still runs
        with pytest.raises(UnknownJobError):
            worker.get_many(["a", "b"])
        with pytest.raises(UnknownJobError):
            worker.get("a")
        with pytest.raises(UnknownJobError):
            list(worker.list())
        with pytest.raises(UnknownJobError):
            worker.get_many(["a"])
    finally:
        worker.close()


def test_a_purged_job_is_unknown(node: NodeProcess) -> None:
    j = pocketlib.connect([str(node.address)], job="purged-job-test")
    try:
        j.put("k", b"v")
        j.purge()
        with pytest.raises(UnknownJobError):
            j.get("k")
        with pytest.raises(UnknownJobError):
            j.put("k", b"v")
    finally:
        j.close()


# -- capacity ----------------------------------------------------------------------------------


def test_value_larger_than_the_tier(small_node: NodeProcess) -> None:
    with pocketlib.connect([str(small_node.address)], job="capacity") as j:
        try:
            j.put("existing", b"E" * MiB)
            j.put_many({f"small/{i}": b"s" * 100 for i in range(5)})
            (stats,) = j.stats().values()
            conns = stats["connections_total"]
            used = stats["tier"]["used"]
            with pytest.raises(CapacityError):
                j.put("existing", os.urandom(9 * MiB))
            with pytest.raises(CapacityError):
                j.put("new", os.urandom(9 * MiB))
            with pytest.raises(CapacityError):
                j.put_many({"new-many": os.urandom(7 * MiB + 1)})
            assert j.get("existing") == b"E" * MiB
            assert not j.exists("new")
            assert not j.exists("new-many")
            assert j.get_many([f"small/{i}" for i in range(5)]) == {
                f"small/{i}": b"s" * 100 for i in range(5)
            }
            j.put("after", b"works")
            assert j.get("after") == b"works"
            assert j.delete("after")
            (stats,) = j.stats().values()
            assert stats["connections_total"] == conns, "the client had to reconnect"
            assert stats["tier"]["used"] == used
        finally:
            j.purge()


def test_streamed_value_larger_than_the_tier(small_node: NodeProcess) -> None:
    with pocketlib.connect([str(small_node.address)], job="capacity-stream") as j:
        try:
            j.put("existing", b"E" * MiB)
            (stats,) = j.stats().values()
            used = stats["tier"]["used"]
            w = j.writer("big", chunk_size=MiB)
            w.write(os.urandom(12 * MiB))
            with pytest.raises(CapacityError):
                w.close()
            assert not j.exists("big")
            assert j.get("existing") == b"E" * MiB
            wait_until(
                lambda: next(iter(j.stats().values()))["tier"]["used"] == used,
                what="the refused stream's chunks being freed",
            )
            with j.writer("fits", chunk_size=MiB) as w2:
                w2.write(b"F" * (3 * MiB))
            assert j.get("fits") == b"F" * (3 * MiB)
        finally:
            j.purge()


# -- broken frames over a raw socket -----------------------------------------------------------


def test_truncated_header_then_close(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(encode_request(Op.PING, 1)[:20])
    raw.close()


def test_truncated_frame_then_close(
    raw: socket.socket, bystander: pocketlib.Job, node: NodeProcess
) -> None:
    base = tier_stats(bystander)["used"]
    token = bystander._tokens[str(node.address)]
    head = encode_request(Op.PUT, 1, bystander.name.encode(), token, b"safe/0", length=5000)
    raw.sendall(head + b"x" * 100)  # promises 5000 bytes, sends 100, hangs up
    raw.close()
    wait_until(lambda: tier_stats(bystander)["used"] == base, what="the reservation being freed")


def test_truncated_key_then_close(
    raw: socket.socket, bystander: pocketlib.Job, node: NodeProcess
) -> None:
    token = bystander._tokens[str(node.address)]
    head = encode_request(Op.GET, 1, bystander.name.encode(), token, b"safe/0-and-more")
    raw.sendall(head[:-5])
    raw.close()


def test_garbage_bytes(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(random.Random(1).randbytes(4096))
    h, body = read_response(raw)
    assert h.status == ProtocolError.status
    assert body
    assert closed_by_peer(raw)


def test_bad_magic(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(raw_header(magic=b"HT") + b"TP/1.1\r\n")
    h, _ = read_response(raw)
    assert h.status == ProtocolError.status
    assert closed_by_peer(raw)


def test_wrong_protocol_version(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(raw_header(version=VERSION + 1))
    head = recv_exact(raw, RESPONSE_HEADER.size)
    magic, version = struct.unpack_from("<2sB", head)
    assert (magic, version) == (MAGIC, VERSION)  # the node replies in its own version
    h = unpack_response(head)
    assert h.status == VersionError.status
    recv_exact(raw, h.length)
    assert closed_by_peer(raw)


def test_over_long_key_length(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(raw_header(op=int(Op.GET), key_len=60_000) + b"k" * 100)
    h, _ = read_response(raw)
    assert h.status == InvalidKeyError.status
    assert closed_by_peer(raw)


def test_non_utf8_key(raw: socket.socket, bystander: pocketlib.Job, node: NodeProcess) -> None:
    token = bystander._tokens[str(node.address)]
    raw.sendall(encode_request(Op.GET, 3, bystander.name.encode(), token, b"\xff\xfe"))
    h, _ = read_response(raw)
    assert h.status == InvalidKeyError.status
    assert closed_by_peer(raw)


def test_unknown_opcode(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(raw_header(op=99))
    h, _ = read_response(raw)
    assert h.status == ProtocolError.status
    assert closed_by_peer(raw)


def test_raw_ping_then_garbage(raw: socket.socket, bystander: pocketlib.Job) -> None:
    raw.sendall(encode_request(Op.PING, 41))
    h, _ = read_response(raw)
    assert (h.status, h.request_id) == (0, 41)
    raw.sendall(b"\x00" * REQUEST_HEADER.size)
    h, _ = read_response(raw)
    assert h.status == ProtocolError.status
    assert closed_by_peer(raw)


# -- a client killed mid-put -------------------------------------------------------------------

_KILLED_CLIENT = """
import socket, sys, time
from pocketlib.protocol import Op, encode_request
host, port, job, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
sock = socket.create_connection((host, port))
head = encode_request(Op.PUT, 1, job.encode(), token, b"half-put", length=8 << 20)
sock.sendall(head + b"h" * (1 << 20))
print("sent", flush=True)
time.sleep(60)
"""


def test_client_killed_mid_put(node: NodeProcess, job: pocketlib.Job) -> None:
    job.put("before", b"intact")
    base = tier_stats(job)["used"]
    token = job._tokens[str(node.address)]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT, node.address.host, str(node.address.port),
         job.name, token.hex()],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "sent"
        # The node reserved the whole announced value as soon as the header arrived.
        wait_until(lambda: tier_stats(job)["used"] >= base + 8 * MiB, what="the reservation")
        assert not job.exists("half-put")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    wait_until(lambda: tier_stats(job)["used"] == base, what="the reservation being freed")
    assert not job.exists("half-put")
    assert list(job.list()) == ["before"]
    assert job.get("before") == b"intact"


def test_a_put_in_flight_when_its_job_is_purged_leaves_nothing(
    node: NodeProcess, raw: socket.socket
) -> None:
    name = f"purged-mid-put-{os.getpid()}"
    j = pocketlib.connect([str(node.address)], job=name)
    try:
        base = tier_stats(j)["used"]
        token = j._tokens[str(node.address)]
        value = b"v" * (2 * MiB)
        head = encode_request(Op.PUT, 1, name.encode(), token, b"straggler", length=len(value))
        raw.sendall(head + value[:MiB])  # a straggler is half-way through its upload...
        wait_until(lambda: tier_stats(j)["used"] >= base + 2 * MiB, what="the reservation")
        assert j.purge() == 0  # ...when the job ends
        raw.sendall(value[MiB:])
        h, _ = read_response(raw)
        (stats,) = j.stats().values()
        assert name not in stats["jobs"]
        assert name not in stats["tier"]["objects_by_job"], (
            f"the straggler's put (status {h.status}) was stored under the purged job"
        )
        assert stats["tier"]["used"] == base
    finally:
        j.close()
        with pocketlib.connect([str(node.address)], job=name) as again:
            again.purge()


# -- racing clients ----------------------------------------------------------------------------

_KEYS = 20
_HEADER = struct.Struct("<IIIQQ")  # key index, writer id, seq, payload length, payload xxh64


def _make_value(rng: random.Random, key: int, writer: int, seq: int) -> bytes:
    payload = rng.randbytes(rng.choice((0, 10, 1000, 70_000, 300_000)))
    return _HEADER.pack(key, writer, seq, len(payload), xxhash.xxh64_intdigest(payload)) + payload


def _check_value(value: bytes, key: int) -> str | None:
    """Why ``value`` is not a complete value written for ``key``, or None if it is."""
    if len(value) < _HEADER.size:
        return f"{len(value)} bytes: shorter than a header"
    k, _, _, length, digest = _HEADER.unpack_from(value)
    payload = value[_HEADER.size :]
    if k != key:
        return f"a value of key {k} read under key {key}"
    if len(payload) != length:
        return f"payload of {len(payload)} bytes, the header says {length}"
    if xxhash.xxh64_intdigest(payload) != digest:
        return "payload does not match its checksum"
    return None


def _racer(address: str, job_name: str, writer: int, seconds: float, out: Any) -> None:
    rng = random.Random(writer)
    counts = {"put": 0, "get": 0, "missing": 0, "delete": 0}
    torn: list[str] = []
    try:
        with pocketlib.connect([address], job=job_name) as j:
            deadline = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < deadline:
                key = rng.randrange(_KEYS)
                op = rng.random()
                if op < 0.4:
                    seq += 1
                    j.put(f"race/{key}", _make_value(rng, key, writer, seq))
                    counts["put"] += 1
                elif op < 0.85:
                    try:
                        if rng.random() < 0.5:
                            value = j.get(f"race/{key}")
                        else:
                            got = j.get_many([f"race/{key}"])
                            if not got:
                                raise NotFoundError(key)
                            value = got[f"race/{key}"]
                    except NotFoundError:
                        counts["missing"] += 1
                        continue
                    counts["get"] += 1
                    problem = _check_value(value, key)
                    if problem:
                        torn.append(problem)
                else:
                    j.delete(f"race/{key}")
                    counts["delete"] += 1
        out.put((writer, counts, torn, None))
    except BaseException as exc:
        out.put((writer, counts, torn, repr(exc)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("racers", "seconds"), [(4, 2.0), pytest.param(8, 30.0, marks=pytest.mark.slow)]
)
def test_concurrent_put_get_delete_never_tears_a_value(
    node: NodeProcess, job: pocketlib.Job, racers: int, seconds: float
) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(str(node.address), job.name, w, seconds, out))
        for w in range(racers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    reads = 0
    for writer, counts, torn, error in results:
        assert error is None, f"racer {writer} failed: {error}"
        assert torn == [], f"racer {writer} read torn values: {torn[:5]}"
        reads += counts["get"]
    assert reads > 0
    assert sum(c["put"] for _, c, _, _ in results) > 0
    # Whatever survived the race is a complete value.
    for key, value in job.get_many([f"race/{k}" for k in range(_KEYS)]).items():
        assert _check_value(value, int(key.split("/")[1])) is None
