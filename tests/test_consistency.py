"""Every handle of a job sees every acknowledged write, however old its ticket.

Functions get the ticket that existed when they were launched, while the controller grows the
job or drops a lost node. A handle with an older ticket routes by older weight maps only, so
nodes fence it: a write or delete under an older map is refused, and a miss is answered with
StaleTicketError instead of NotFoundError; the handle refreshes and repeats the operation.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _helpers import grow, wait_until

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.client import batch
from pocketlib.errors import NodeLostError, NotFoundError, StaleTicketError, TransportError
from pocketlib.filesystem import PocketFileSystem

MiB = 1024 * 1024


def v1_ticket(job: pocketlib.Job) -> str:
    """The job's first ticket (JSON), as a function launched before the job grew holds it."""
    data = job.ticket.as_dict()
    data["maps"] = data["maps"][:1]
    return json.dumps(data)


@pytest.fixture
def grown() -> Iterator[tuple[LocalCluster, pocketlib.Job, pocketlib.Job, list[str]]]:
    """A job on one node (v1) grown onto a second (v2): an old handle attached from the v1
    ticket, a new one from v2, and keys the new handle wrote where only v2 sends them."""
    with LocalCluster(node_capacity="16MiB", tick=0.1, autoscale=False) as cl:
        client = cl.client()
        job = client.register_job("grown", JobHints(capacity="4MiB"))
        old = client.attach(job.ticket.to_json())
        grow(cl.controller, job.ticket.job)
        assert job.refresh()
        assert job.ticket.version == 2
        first, newest = job.ticket.maps[0].weights, job.ticket.maps[-1].weights
        new_node = next(n for n in newest if n not in first)
        keys = [k for k in (f"k{i}" for i in range(200))
                if job.router.write_node(k.encode()) == new_node][:20]  # fmt: skip
        for k in keys:
            job.put(k, k.encode() * 3)
        assert old.ticket.version == 1
        yield cl, old, job, keys
        job.deregister()
        client.close()


def test_an_old_handle_gets_what_a_newer_one_wrote(grown: Any) -> None:
    _, old, _, keys = grown
    assert old.get(keys[0]) == keys[0].encode() * 3  # (this was NotFoundError)
    assert old.ticket.version == 2  # the miss on the v1 node made it refresh


def test_every_read_of_an_old_handle_reflects_the_newer_writes(grown: Any) -> None:
    _, _, job, keys = grown
    fresh = lambda: pocketlib.attach(v1_ticket(job))  # noqa: E731
    checks = {
        "exists": lambda h, k: h.exists(k) is True,
        "stat": lambda h, k: h.stat(k).size == 3 * len(k),
        "get_many": lambda h, k: h.get_many([k]) == {k: k.encode() * 3},
        "get_into": lambda h, k: h.get_into(k, bytearray(64)) == 3 * len(k),
        "get_range": lambda h, k: h.get_range(k, 1, 3) == (k.encode() * 3)[1:3],
        "get_ranges": lambda h, k: (
            h.get_ranges([(k, 0, 1), (k, 1, 3)]) == [(k.encode() * 3)[:1], (k.encode() * 3)[1:3]]
        ),
        "get_buffer": lambda h, k: bytes(h.get_buffer(k).view) == k.encode() * 3,
        "reader": lambda h, k: h.reader(k).read() == k.encode() * 3,
        "list": lambda h, k: k in list(h.list("k")),
        "list_info": lambda h, k: k in [i.key for i in h.list_info("k")],
    }
    for name, check in checks.items():
        with fresh() as h:
            assert h.ticket.version == 1
            assert check(h, keys[1]), name
            assert h.ticket.version == 2, name


def test_an_old_handle_deletes_what_a_newer_one_wrote(grown: Any) -> None:
    _, old, job, keys = grown
    assert old.delete(keys[2]) is True  # (this was False, and the value stayed)
    with pytest.raises(NotFoundError):
        job.get(keys[2])
    assert old.delete_prefix(keys[3]) >= 1
    assert not job.exists(keys[3])


def test_an_old_handle_writes_where_newer_handles_read(grown: Any) -> None:
    _, old, job, keys = grown
    old.put(keys[4], b"from the old handle")  # refused under v1, written under v2
    assert job.get(keys[4]) == b"from the old handle"
    with pocketlib.attach(v1_ticket(job)) as old2:
        old2.put_many({keys[5]: b"many", keys[6]: b"more"})
        assert job.get_many([keys[5], keys[6]]) == {keys[5]: b"many", keys[6]: b"more"}
    with pocketlib.attach(v1_ticket(job)) as old3:  # a copy is a write: fenced the same way
        old3.copy(keys[7], keys[8])
        assert job.get(keys[8]) == keys[7].encode() * 3


def test_a_stale_handle_without_a_controller_says_so_rather_than_not_found(grown: Any) -> None:
    _, _, job, keys = grown
    data = json.loads(v1_ticket(job))
    data["controller"] = "127.0.0.1:9"  # nothing listens there: no refresh possible
    with pocketlib.attach(json.dumps(data)) as h:
        with pytest.raises(StaleTicketError, match=r"v1 .* v2"):
            h.get(keys[7])
        with pytest.raises(StaleTicketError):
            h.put(keys[7], b"x")
        with pytest.raises(StaleTicketError):
            h.exists(keys[7])
    assert job.get(keys[7]) == keys[7].encode() * 3  # the refused put stored nothing


def test_a_streamed_write_under_a_stale_ticket_stores_nothing_and_refreshes(grown: Any) -> None:
    _, old, job, keys = grown
    key = keys[8]
    with pytest.raises(StaleTicketError), old.writer(key, chunk_size=64 * 1024) as w:
        w.write(b"s" * 200_000)
    assert job.get(key) == key.encode() * 3
    assert old.ticket.version == 2
    with old.writer(key) as w:
        w.write(b"again")
    assert job.get(key) == b"again"


def test_a_miss_is_still_a_miss(grown: Any) -> None:
    _, old, _, _ = grown
    with pytest.raises(NotFoundError):
        old.get("never-written")
    assert old.ticket.version == 2
    assert old.get_many(["never-written"]) == {}
    assert old.exists("never-written") is False


def test_reads_pinned_to_a_version_find_values_an_older_map_placed() -> None:
    """A file opened for reading pins its value's version; after the job grows, the newest
    map sends half the keys to a node that does not hold them, and the pinned read must go on
    to the node that does (it used to say the value had changed)."""
    with LocalCluster(node_capacity="16MiB", tick=0.1, autoscale=False) as cl:
        client = cl.client()
        job = client.register_job("pinned", JobHints(capacity="4MiB"))
        values = {f"p{i}": os.urandom(5000 + i) for i in range(12)}
        job.put_many(values)
        versions = {k: job.stat(k).version for k in values}
        grow(cl.controller, job.ticket.job)
        assert job.refresh()
        moved = [k for k in values if job.router.write_node(k.encode())
                 != job.ticket.maps[0].router.node_for(k.encode())]  # fmt: skip
        assert moved  # (some keys now route to the new node)
        fs = PocketFileSystem(job.ticket.to_json())
        for k, value in values.items():
            assert job.get_range(k, 10, 20, version=versions[k]) == value[10:20]
        with fs.open(f"pinned/{moved[0]}", "rb") as f:  # (whole on opening: small)
            assert f.read() == values[moved[0]]
        job.put(moved[0], b"new")  # overwritten: a read pinned to the old value says so
        with pytest.raises(pocketlib.ConflictError):
            job.get_range(moved[0], 0, 3, version=versions[moved[0]])
        job.delete(moved[1])
        with pytest.raises(pocketlib.ConflictError, match="deleted"):
            job.get_range(moved[1], 0, 3, version=versions[moved[1]])
        job.deregister()
        client.close()


# -- many processes, one node killed ------------------------------------------------------------


def _worker(ticket: str, wid: int, stop: Any, acks: Any) -> None:
    """A function: puts and reads back its own values, reporting each acknowledged put (key,
    time) and any wrong bytes."""
    job = pocketlib.attach(ticket)
    i = 0
    while not stop.is_set():
        key = f"w{wid}-{i}"
        value = f"{key}:{'x' * (i % 97)}".encode()
        try:
            job.put(key, value)
        except TransportError:  # routed to the killed node before it was found dead
            time.sleep(0.01)
            i += 1
            continue
        acks.put((key, time.time()))
        with contextlib.suppress(TransportError):
            got = job.get(key)
            if got != value:
                acks.put((key, "WRONG"))
        i += 1
    job.close()


@contextlib.contextmanager
def _stopped_at_exit(stop: Any, workers: list[Any]) -> Iterator[None]:
    """Workers stopped however the block ends: a failed test must not leave them running
    (a worker blocked on its queue would hold the test run at exit)."""
    try:
        yield
    finally:
        stop.set()
        for p in workers:
            if p.is_alive():
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def _value_of(key: str) -> bytes:
    i = int(key.rsplit("-", 1)[1])
    return f"{key}:{'x' * (i % 97)}".encode()


def test_values_acknowledged_after_a_node_is_killed_read_back_from_the_original_ticket() -> None:
    with LocalCluster({"dram": 3}, node_capacity="32MiB", tick=0.1, dead_after=0.6) as cl:
        client = cl.client()
        job = client.register_job("survives", JobHints(capacity="80MiB"))  # all three nodes
        original = job.ticket.to_json()
        assert len(job.ticket.nodes) == 3
        ctx = multiprocessing.get_context("spawn")
        stop, acks = ctx.Event(), ctx.Queue()
        workers = [ctx.Process(target=_worker, args=(original, w, stop, acks)) for w in range(3)]
        with _stopped_at_exit(stop, workers):
            for p in workers:
                p.start()
            time.sleep(1.0)
            victim = job.router.write_node(b"w0-0")
            name = next(n["name"] for n in client.status()["nodes"] if n["address"] == victim)
            cl.provisioner.kill_node(name)
            killed_at = time.time()

            # The controller finds it dead (a map without it) and starts a replacement (another).
            def replaced() -> bool:  # a map without the victim, then one with a new node
                job.refresh()
                weights = job.ticket.maps[-1].weights
                return victim not in weights and len(weights) == 3

            wait_until(replaced, timeout=40, what="a map with a replacement node")
            newest = job.ticket.version
            assert newest >= 3
            assert victim in job.ticket.lost
            # Functions launched now get the newest ticket; the first ones keep going.
            later = job.ticket.to_json()
            workers += [ctx.Process(target=_worker, args=(later, w, stop, acks)) for w in (3, 4)]
            for p in workers[3:]:
                p.start()
            time.sleep(2.0)
            stop.set()
            acked: dict[str, float] = {}
            # Read the acknowledgements while the workers finish: a process does not exit before
            # what it queued is read.
            deadline = time.monotonic() + 60
            while any(p.is_alive() for p in workers) or not acks.empty():
                assert time.monotonic() < deadline, "workers did not finish"
                try:
                    key, when = acks.get(timeout=0.2)
                except queue.Empty:
                    continue
                assert when != "WRONG", f"{key} read back wrong bytes"
                acked[key] = when
            assert [p.exitcode for p in workers] == [0] * len(workers)
            after = [k for k, t in acked.items() if t > killed_at + 0.05]
            assert len(after) > 50
            for key in after:  # each read from a handle of its own, as a function would make it
                h = client.attach(original)
                assert h.get(key) == _value_of(key), key
        job.deregister()
        client.close()


def test_a_node_not_yet_found_dead_fails_fast_with_a_transport_error() -> None:
    """Until the controller finds a killed node dead, keys routed to it raise a
    TransportError subclass at once (not a miss, not a hang); other keys work."""
    with LocalCluster(node_capacity="16MiB", tick=0.1, dead_after=60, autoscale=False) as cl:
        client = cl.client()
        job = client.register_job("window", JobHints(capacity="24MiB"))  # both nodes
        assert len(job.ticket.nodes) == 2
        keys = [f"k{i}" for i in range(40)]
        job.put_many({k: k.encode() for k in keys})
        victim = job.router.write_node(b"k0")
        name = next(n["name"] for n in client.status()["nodes"] if n["address"] == victim)
        cl.provisioner.kill_node(name)
        on_victim = [k for k in keys if job.router.write_node(k.encode()) == victim]
        elsewhere = [k for k in keys if k not in on_victim]
        h = client.attach(job.ticket)
        for op in (lambda k: h.get(k), lambda k: h.put(k, b"x"), lambda k: h.exists(k)):
            with pytest.raises(TransportError) as caught:
                op(on_victim[0])
            assert caught.type is not TransportError  # a subclass: ConnectError here
        assert all(h.get(k) == k.encode() for k in elsewhere)
        assert h.ticket.version == 1  # nothing newer to refresh to yet
        job.deregister()
        client.close()


def test_a_write_is_not_acknowledged_while_an_older_copy_cannot_be_deleted() -> None:
    """A job grown from node A onto A and B: a key the new map sends to B may still have its
    old value on A. Its put deletes that copy before it is acknowledged; while A cannot be
    reached and is not yet found dead, the put raises instead of leaving the old value where
    a later map or the loss of B would let reads find it. Once A is found dead (its copies
    went with it), the put succeeds."""
    with LocalCluster(node_capacity="16MiB", tick=0.1, dead_after=60, autoscale=False) as cl:
        client = cl.client()
        job = client.register_job("older", JobHints(capacity="4MiB"))
        (a,) = job.ticket.nodes
        keys = [f"k{i}" for i in range(100)]
        job.put_many({k: b"old" for k in keys})
        grow(cl.controller, job.ticket.job)
        assert job.refresh()
        moving = [k for k in keys if job.router.write_node(k.encode()) != a]
        staying = [k for k in keys if k not in moving]
        assert moving
        assert staying
        name = next(n["name"] for n in client.status()["nodes"] if n["address"] == a)
        cl.provisioner.kill_node(name)
        h = client.attach(job.ticket)
        with pytest.raises(TransportError):
            h.put(moving[0], b"new")
        with pytest.raises(TransportError):
            h.put_many({k: b"new" for k in moving[1:4]})
        with cl.controller.lock:  # A's heartbeats now count as missed: it is found dead
            cl.controller.nodes[name].last_seen -= 120

        def a_lost() -> bool:
            h.refresh()
            return a in h.ticket.lost

        wait_until(a_lost, timeout=30, what="node A found dead")
        h.put(moving[0], b"new")
        h.put_many({k: b"new" for k in moving[1:4]})
        assert [h.get(k) for k in moving[:4]] == [b"new"] * 4
        with pytest.raises(NodeLostError):
            h.get(staying[0])
        job.deregister()
        client.close()


def test_a_refused_batch_leaves_its_connection_in_step(grown: Any) -> None:
    """put_many from an old handle sends several MULTI_PUT batches before the first answer;
    all are refused (stale ticket), all answers are read, and the repeat under the newer
    ticket goes over the same pooled connections."""
    _, old, job, _ = grown
    items = {f"many/{i}": str(i).encode() for i in range(3 * batch.BATCH_KEYS)}
    old.put_many(items)
    assert old.ticket.version == 2
    assert job.get_many(list(items)) == items
    assert old.get("many/7") == b"7"
