"""The control plane end to end: a LocalCluster (controller + node processes), real sockets."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from _helpers import wait_until

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.errors import (
    AccessError,
    CapacityError,
    ConfigError,
    NodeLostError,
    NotFoundError,
    RequestError,
    TokenError,
    UnknownJobError,
)
from pocketlib.protocol import Op
from pocketlib.routing.weightmap import VersionedRouter

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two DRAM nodes of 64 MiB; no autoscaling, so tests see the placement they asked for."""
    with LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2) as c:
        yield c


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[pocketlib.Client]:
    with cluster.client() as c:
        yield c


def refresh_until(job: pocketlib.Job, holds: Callable[[], object], what: str) -> None:
    """Refresh ``job``'s ticket until ``holds()``. (Not ``job.refresh() or holds()``: that
    stops at the first new ticket, whatever its map holds.)"""

    def refreshed() -> object:
        job.refresh()
        return holds()

    wait_until(refreshed, what=what)


def test_register_put_get_deregister(cluster: LocalCluster, client: pocketlib.Client) -> None:
    job = client.register_job("roundtrip", JobHints(capacity="8MiB"))
    assert job.ticket.job.startswith("roundtrip-")
    assert job.ticket.controller == cluster.address
    job.put("k", b"value")
    assert job.get("k") == b"value"
    node = job.router.write_node(b"k")
    freed = job.deregister()
    assert freed["objects"] == 1
    stats = client.node_stats([node])[node]
    assert job.ticket.job not in stats["tier"]["used_by_job"]
    with pytest.raises(UnknownJobError, match="deregistered"):
        job.get("k")  # the node remembers the job is gone: the token is refused for good
    with pytest.raises(UnknownJobError):
        job.deregister()


def test_ticket_needs_no_controller(cluster: LocalCluster, client: pocketlib.Client) -> None:
    """A function attaches with the ticket alone; here in another process, with the
    controller unreachable for it (a wrong controller address in the ticket)."""
    job = client.register_job("attach", JobHints(capacity="4MiB"))
    job.put("input", b"from the driver")
    data = job.ticket.as_dict()
    data["controller"] = "127.0.0.1:9"  # nothing listens there
    code = (
        "import sys, pocketlib\n"
        "job = pocketlib.attach(sys.argv[1])\n"
        "job.put('output', job.get('input') + b' and the function')\n"
    )
    subprocess.run([sys.executable, "-c", code, json.dumps(data)], check=True, timeout=60)
    assert job.get("output") == b"from the driver and the function"
    job.deregister()


def test_a_job_spans_nodes_when_one_cannot_hold_it(client: pocketlib.Client) -> None:
    job = client.register_job("wide", JobHints(capacity="100MiB"))  # 64 MiB nodes
    weights = job.ticket.maps[-1].weights
    assert len(weights) == 2
    assert sum(weights.values()) == pytest.approx(1.0)
    keys = [f"k{i}" for i in range(200)]
    job.put_many({k: b"v" for k in keys})
    assert {job.router.write_node(k.encode()) for k in keys} == set(weights)
    assert sorted(job.list()) == sorted(keys)
    job.deregister()


def test_impossible_hints_are_refused(client: pocketlib.Client) -> None:
    with pytest.raises(CapacityError, match="node"):
        client.register_job("huge", JobHints(capacity="1TB"))  # beyond max_nodes of 64 MiB
    for bad in ({"capacity": -5}, {"peak_throughput": "fast"}, {"max_concurrency": 0},
                {"nonsense": 1}):  # fmt: skip
        with pytest.raises(ConfigError):
            client.control(Op.JOB_REGISTER, {"name": "bad", "hints": bad})
    with pytest.raises(RequestError):
        client.control(Op.JOB_REGISTER, {"hints": {}})  # no name
    with pytest.raises(ConfigError):
        client.register_job("", JobHints())
    # Nothing was half-registered by the refusals.
    assert not [j for j in client.status()["jobs"] if j["name"] in ("huge", "bad")]


def test_latency_insensitive_job_without_other_tiers_still_lands_on_dram(
    client: pocketlib.Client,
) -> None:
    job = client.register_job("batch", JobHints(latency_sensitive=False, capacity="1MiB"))
    (entry,) = [j for j in client.status()["jobs"] if j["id"] == job.ticket.job]
    assert entry["tier"] == "dram"  # the only tier this cluster runs
    job.deregister()


ALL_OPS: list[tuple[str, Callable[[pocketlib.Job], object]]] = [
    ("put", lambda j: j.put("secret", b"overwritten")),
    ("get", lambda j: j.get("secret")),
    ("get_into", lambda j: j.get_into("secret", bytearray(64))),
    ("get_range", lambda j: j.get_range("secret", 0, 2)),
    ("get_buffer", lambda j: j.get_buffer("secret")),
    ("stat", lambda j: j.stat("secret")),
    ("exists", lambda j: j.exists("secret")),
    ("delete", lambda j: j.delete("secret")),
    ("list", lambda j: list(j.list())),
    ("delete_prefix", lambda j: j.delete_prefix("")),
    ("put_many", lambda j: j.put_many({"secret": b"x"})),
    ("get_many", lambda j: j.get_many(["secret"])),
    ("writer", lambda j: j.writer("secret").close()),
    ("purge", lambda j: j.purge()),
]


@pytest.mark.parametrize("how", ["other job's token", "forged token", "no token"])
@pytest.mark.parametrize(("op", "call"), ALL_OPS, ids=[name for name, _ in ALL_OPS])
def test_isolation(
    client: pocketlib.Client, how: str, op: str, call: Callable[[pocketlib.Job], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    a = client.register_job("victim", JobHints(capacity="1MiB"))
    b = client.register_job("attacker", JobHints(capacity="1MiB"))
    try:
        a.put("secret", b"A's data")
        token = {"other job's token": b.ticket.token, "forged token": bytes(16),
                 "no token": b""}[how]  # fmt: skip
        forged = pocketlib.Ticket(a.ticket.job, "forged", token, a.ticket.maps)
        intruder = client.attach(forged)
        with pytest.raises(TokenError):
            call(intruder)
        assert a.get("secret") == b"A's data"
        assert list(a.list()) == ["secret"]
    finally:
        a.deregister()
        b.deregister()


def test_managed_nodes_refuse_job_open(cluster: LocalCluster, client: pocketlib.Client) -> None:
    job = client.register_job("probe", JobHints(capacity="1MiB"))
    node = job.ticket.nodes[0]
    with pytest.raises(AccessError, match="controller"):
        pocketlib.connect([node], job=job.ticket.job)  # direct mode would hand out a token
    with pytest.raises(TokenError):
        client.deregister_job(pocketlib.Ticket(job.ticket.job, "x", bytes(16), job.ticket.maps))
    job.deregister()


def test_controller_ops_need_the_cluster_secret(client: pocketlib.Client) -> None:
    body = {"name": "rogue", "address": "127.0.0.1:1", "tier": "dram", "capacity": 1,
            "bandwidth": 1}  # fmt: skip
    with pytest.raises(TokenError):
        client.control(Op.NODE_REGISTER, body, job="rogue", token=bytes(16))
    with pytest.raises(TokenError):
        client.control(Op.NODE_HEARTBEAT, body, job="rogue", token=bytes(16))
    assert "rogue" not in {n["name"] for n in client.status()["nodes"]}


def test_data_ops_sent_to_the_controller_get_a_clear_error(
    cluster: LocalCluster, client: pocketlib.Client
) -> None:
    with pytest.raises(RequestError, match="not a controller operation"):
        client.call(cluster.address, Op.GET, b"job", b"", b"key")
    node = client.status()["nodes"][0]["address"]
    with pytest.raises(RequestError, match="controller"):
        client.call(node, Op.JOB_REGISTER, body=[b"{}"])


def test_status_and_accounting(cluster: LocalCluster, client: pocketlib.Client) -> None:
    job = client.register_job("billed", JobHints(capacity="2MiB", peak_throughput="10MB/s"))
    for i in range(50):
        job.put(f"k{i}", b"x" * 4096)
    for i in range(50):
        job.get(f"k{i}")
    job_id = job.ticket.job

    def billed() -> bool:
        usage = client.status()["usage"]["jobs"].get(job_id, {}).get("dram", {})
        return usage.get("requests", 0) >= 100 and usage.get("used_capacity_s", 0) > 0

    wait_until(billed)
    status = client.status()
    usage = status["usage"]["jobs"][job_id]["dram"]
    assert usage["capacity_s"] >= 2 * MiB * 0.1  # allocated for at least a tick
    assert usage["throughput_s"] > 0
    assert usage["cost"] > 0
    (entry,) = [j for j in status["jobs"] if j["id"] == job_id]
    assert entry["used"] >= 50 * 4096
    assert {n["state"] for n in status["nodes"]} == {"active"}
    assert status["usage"]["fleet"]["dram"]["node_seconds"] > 0
    job.deregister()


def test_refresh_sees_a_new_weight_map_and_old_keys_stay_readable() -> None:
    """Registration does not wait for new nodes: the job starts on what runs, and the
    nodes started for it join as a new weight-map version; keys written before stay found."""
    with LocalCluster({"dram": 1}, node_capacity="32MiB", autoscale=False, tick=0.1) as c:
        client = c.client()
        job = client.register_job("grows", JobHints(capacity="80MiB"))
        assert job.ticket.version == 1
        assert len(job.ticket.nodes) == 1  # placed on the running node at once
        early = {f"early-{i}": str(i).encode() for i in range(100)}
        job.put_many(early)
        wait_until(job.refresh)
        refresh_until(job, lambda: len(job.ticket.maps[-1].weights) == 3, "a third node")
        assert len(job.ticket.maps[-1].weights) == 3  # 80 MiB on 32 MiB nodes
        assert job.get_many(list(early)) == early
        for key, value in early.items():
            assert job.get(key) == value
        assert sorted(job.list()) == sorted(early)
        job.put("early-1", b"rewritten")  # an overwrite under the new map wins
        assert job.get("early-1") == b"rewritten"
        assert job.delete("early-2")
        with pytest.raises(NotFoundError):
            job.get("early-2")
        job.deregister()
        client.close()


def test_a_lost_node_gives_clear_errors_and_is_replaced() -> None:
    with LocalCluster(node_capacity="32MiB", tick=0.1, dead_after=0.6) as c:
        client = c.client()
        job = client.register_job("survivor", JobHints(capacity="48MiB"))
        keys = [f"k{i}" for i in range(100)]
        job.put_many({k: k.encode() for k in keys})
        victim = job.router.write_node(b"k0")
        name = next(n["name"] for n in client.status()["nodes"] if n["address"] == victim)
        c.provisioner.kill_node(name)
        wait_until(lambda: any(n["name"] == name and n["state"] == "dead"
                               for n in client.status()["nodes"]))  # fmt: skip
        wait_until(lambda: job.refresh() and victim in job.ticket.lost)
        assert victim not in job.ticket.maps[-1].weights
        lost = [k for k in keys if job.router.maps[0].router.node_for(k.encode()) == victim]
        kept = [k for k in keys if k not in lost]
        assert lost
        assert kept
        for k in kept:
            assert job.get(k) == k.encode()
        with pytest.raises(NodeLostError, match=victim):
            job.get(lost[0])
        job.put(lost[0], b"written again")  # writes go to the nodes that remain
        assert job.get(lost[0]) == b"written again"
        assert set(job.list()) >= set(kept)
        # The autoscaler brings the fleet back to its minimum of two.
        wait_until(lambda: c.alive_nodes() == 2)
        job.deregister()
        client.close()


def test_registration_waits_only_when_no_running_node_can_take_any() -> None:
    with LocalCluster({"dram": 1}, node_capacity="16MiB", autoscale=False, tick=0.1) as c:
        client = c.client()
        first = client.register_job("fills", JobHints(capacity="16MiB"))
        t0 = time.monotonic()
        second = client.register_job("waits", JobHints(capacity="8MiB"))
        waited = time.monotonic() - t0
        assert second.ticket.nodes != first.ticket.nodes  # it got the node started for it
        assert waited > 0  # (not a timing assertion: it had to wait for a process to start)
        second.put("k", b"v")
        assert second.get("k") == b"v"
        first.deregister()
        second.deregister()
        client.close()


def test_autoscaling_adds_a_node_to_a_hot_tier_and_drains_back() -> None:
    with LocalCluster(node_capacity="16MiB", tick=0.1, dead_after=1.0, scale_down_delay=0.3) as c:
        client = c.client()
        # The whole fleet, so both nodes carry equal weight (packing fills the fullest first).
        job = client.register_job("filler", JobHints(capacity="32MiB"))
        assert sorted(job.ticket.maps[-1].weights.values()) == [0.5, 0.5]
        value = bytes(128 * 1024)
        # 105 keys per node: 26 MiB of 32, 82%, above the band. Chosen by the job's router,
        # because 210 hashed keys put more than a node's 128 on one node about once in 1000.
        per_node: dict[str, list[str]] = {n: [] for n in job.ticket.maps[-1].weights}
        for i in itertools.count():
            key = f"v{i}"
            keys = per_node[job.router.write_node(key.encode())]
            if len(keys) < 105:
                keys.append(key)
            if all(len(k) == 105 for k in per_node.values()):
                break
        job.put_many({k: value for keys in per_node.values() for k in keys})
        wait_until(lambda: c.alive_nodes() == 3, what="a third node")
        decisions = [d["decision"] for d in client.status()["decisions"]]
        assert any(d.startswith("add dram: capacity at") for d in decisions), decisions
        # The hot job grows onto the new node: a new weight-map version with three nodes.
        refresh_until(job, lambda: len(job.ticket.maps[-1].weights) == 3, "a third node")
        assert len(job.ticket.maps[-1].weights) == 3
        assert job.get(per_node[min(per_node)][7]) == value  # written under the old map: found
        job.deregister()
        # Empty and cold: one node is drained, then stopped; never below the minimum of two.
        wait_until(lambda: c.alive_nodes() == 2, what="a drain back to two nodes")
        decisions = [d["decision"] for d in client.status()["decisions"]]
        assert any(d.startswith("drain dram") for d in decisions), decisions
        assert any(d.startswith("stop dram") for d in decisions), decisions
        client.close()


def test_a_cold_tier_shrinks_jobs_off_a_node_and_stops_it_once_its_data_is_gone() -> None:
    with LocalCluster(
        node_capacity="16MiB", autoscale=False, tick=0.1, dead_after=1.0, scale_down_delay=0.3
    ) as c:
        client = c.client()
        job = client.register_job("shrinks", JobHints(capacity="40MiB"))  # two nodes and a third
        refresh_until(job, lambda: len(job.ticket.maps[-1].weights) == 3, "a third node")
        keys = [f"k{i}" for i in range(90)]
        job.put_many({k: k.encode() for k in keys})
        stale = client.attach(job.ticket)  # a function that will not refresh on its own
        c.controller.autoscale = True  # the job is idle: every resource is under 60%

        def drained() -> str | None:
            return next((n["address"] for n in client.status()["nodes"]
                         if n["state"] == "draining"), None)  # fmt: skip

        wait_until(drained, what="a drain")
        gone = drained()
        assert gone is not None
        refresh_until(job, lambda: gone not in job.ticket.maps[-1].weights, "a map without it")
        assert gone not in job.ticket.maps[-1].weights  # new data goes elsewhere
        on_gone = [k for k in keys if stale.router.write_node(k.encode()) == gone]
        assert on_gone, (gone, dict(stale.ticket.maps[-1].weights), job.ticket)
        for k in keys:  # data is never migrated: what the node holds is read from it
            assert job.get(k) == k.encode()
        wait_until(lambda: client.node_stats([gone])[gone]["draining"], what="the node to know")
        stale.put(on_gone[0], b"rewritten")  # refused by the node; refreshed; written elsewhere
        assert stale.ticket.version == job.ticket.version
        assert job.get(on_gone[0]) == b"rewritten"
        # The node still holds the job's data, so it stays (three ticks at least).
        time.sleep(0.5)
        assert gone in {n["address"] for n in client.status()["nodes"]}
        before_stop = client.attach(job.ticket)  # will not know the node was retired
        for k in on_gone:
            job.delete(k)
        wait_until(lambda: gone not in {n["address"] for n in client.status()["nodes"]},
                   what="the drained node to stop")  # fmt: skip
        # Every operation that would have asked the stopped node refreshes and carries on.
        kept = [k for k in keys if k not in on_gone]
        assert before_stop.get_many(kept + on_gone[1:3]) == {k: k.encode() for k in kept}
        assert not before_stop.exists(on_gone[1])
        assert sorted(before_stop.list()) == sorted(kept)
        assert not before_stop.delete(on_gone[2])
        job.refresh()
        assert gone in job.ticket.retired
        for k in keys:
            if k not in on_gone:
                assert job.get(k) == k.encode()
        with pytest.raises(NotFoundError):  # a retired node is skipped: no connection error
            job.get(on_gone[1])
        job.deregister()
        client.close()


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue  # gone meanwhile
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_closing_a_cluster_stops_nodes_that_are_still_starting() -> None:
    with LocalCluster({"dram": 1}, node_capacity="16MiB", autoscale=False) as c:
        with c.client() as client:
            client.register_job("wide", JobHints(capacity="60MiB"))  # three more nodes start
        address = c.address
        assert c.provisioner.handles()
    assert processes_mentioning(f"--controller\0{address}") == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_nodes_of_a_killed_driver_do_not_outlive_it() -> None:
    """kill -9 of the process that runs a LocalCluster: its nodes notice and stop."""
    code = (
        "import pocketlib, sys, time\n"
        "c = pocketlib.LocalCluster(node_capacity='16MiB')\n"
        "print(c.address, flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        address = driver.stdout.readline().strip()
        assert len(processes_mentioning(f"--controller\0{address}")) == 2
        driver.kill()
        driver.wait()
        wait_until(lambda: not processes_mentioning(f"--controller\0{address}"),
                   what="the orphaned nodes to stop")  # fmt: skip
    finally:
        driver.kill()
        driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()


def test_a_full_node_makes_a_stale_handle_refresh_and_write_elsewhere() -> None:
    with LocalCluster({"dram": 1}, node_capacity="16MiB", autoscale=False, tick=0.1) as c:
        client = c.client()
        job = client.register_job("fills", JobHints(capacity="40MiB"))
        stale = client.attach(job.ticket)  # version 1: the one running node only
        assert stale.ticket.version == 1
        # Two nodes are started for the job, and each joins it as a map version of its own
        # (v2, then v3): the puts begin once ``job`` holds the last one, since a version made
        # during them would reach ``stale`` (a refused put refreshes it) but not ``job``.
        refresh_until(job, lambda: len(job.ticket.maps[-1].weights) == 3, "both new nodes")
        value = bytes(1 << 20)
        stored = [f"f{i}" for i in range(30)]  # 30 MiB: more than the first node holds
        for key in stored:
            # The first put is refused (a stale ticket) and refreshes the handle; should the
            # first node fill up, the put that finds it full moves the job off it (a newer
            # version than ``job`` holds) and lands elsewhere: every write lands.
            stale.put(key, value)
        assert stale.ticket.version >= job.ticket.version  # the first refusal refreshed it
        assert len({stale.router.write_node(k.encode()) for k in stored}) > 1
        assert sorted(job.list()) == sorted(stored)
        job.deregister()
        client.close()


def test_an_overwrite_never_reads_back_the_value_it_replaced() -> None:
    """A key written under map v1 (node a) and overwritten under v2 (node b): once v3 routes
    it back to a, reads must find the new value, not the copy v1 left on a."""
    with LocalCluster(node_capacity="16MiB", tick=0.1, autoscale=False) as cl:
        c = cl.controller
        client = cl.client()
        job = client.register_job("j", JobHints(capacity="4MiB"))
        with c.lock:  # the job grows onto the second node (as a hot tier makes it): v2
            record = c.jobs[job.ticket.job]
            (a,) = record.alloc
            b = next(n for n in c.nodes if n != a)
            record.alloc[b] = record.alloc[a]
            c._new_map(record)  # (not handed out yet: no node fences v1 until a refresh)
            grown = VersionedRouter(record.maps)
        key = next(k for k in (f"k{i}" for i in range(1000))
                   if grown.write_node(k.encode()) == c.nodes[b].address)  # fmt: skip
        job.put(key, b"old")  # v1: on a
        assert job.refresh()
        job.put(key, b"new")  # v2: on b
        with c.lock:  # b is drained: v3 routes everything to a again
            c.nodes[b].state = "draining"
            c._shrink(c.nodes[b])
        assert job.refresh()
        assert job.get(key) == b"new"
        job.put_many({key: b"newer"})
        assert job.get_many([key]) == {key: b"newer"}
        job.deregister()
        client.close()


def _keys_on(job: pocketlib.Job, node: str, n: int, prefix: str) -> list[str]:
    keys = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((k for k in keys if job.router.write_node(k.encode()) == node), n))


def test_a_write_that_finds_its_node_full_moves_the_job_off_it() -> None:
    """Keys are hashed, so a job close to its capacity can fill one node while another has
    room. The write that finds its node full names it to the controller, which moves the
    job's share off it (a new weight map); the write lands elsewhere, and every handle, old
    tickets included, still reads what the full node holds and what went elsewhere."""
    with LocalCluster(node_capacity="16MiB", autoscale=False, tick=0.1) as c:
        client = c.client()
        job = client.register_job("relieved", JobHints(capacity="32MiB"))
        full, other = sorted(job.ticket.maps[-1].weights)
        before = client.attach(job.ticket)  # a handle that will not refresh on its own
        value = bytes(128 * 1024)
        filling = _keys_on(job, full, 128, "f")  # 128 x 128 KiB: the node's 16 MiB
        job.put_many({k: value for k in filling})
        late = _keys_on(job, full, 1, "late")[0]
        job.put(late, value)  # refused by the full node; the job moves; stored elsewhere
        newest = job.ticket.maps[-1].weights
        assert full not in newest, dict(newest)
        assert other in newest, dict(newest)
        assert job.router.write_node(late.encode()) != full
        for handle in (job, before):
            assert handle.get(late) == value
            assert handle.get_many(filling[:5]) == {k: value for k in filling[:5]}
        assert job.get(filling[-1]) == value
        # Reports of a node already out of the newest map change nothing.
        version = job.ticket.version
        assert client.ticket(job.ticket, full=full).version == version
        job.deregister()
        client.close()


def test_a_job_with_nowhere_else_to_go_still_gets_capacity_error() -> None:
    with LocalCluster({"dram": 1}, node_capacity="16MiB", autoscale=False, max_nodes=1) as c:
        client = c.client()
        job = client.register_job("cramped", JobHints(capacity="16MiB"))
        value = bytes(128 * 1024)
        job.put_many({f"f{i}": value for i in range(128)})
        version = job.ticket.version
        with pytest.raises(pocketlib.CapacityError) as raised:
            job.put("one-more", value)
        assert raised.value.node == job.router.write_node(b"one-more")
        assert job.ticket.version == version  # the map is as it was
        assert job.get("f0") == value
        job.deregister()
        client.close()
