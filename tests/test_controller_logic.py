"""The controller's decisions driven directly (no sockets): nodes register and heartbeat by
calling it, time passes by calling tick()."""

from __future__ import annotations

import time

import pytest

from pocketlib import JobHints
from pocketlib.auth import job_token, node_token
from pocketlib.control.controller import Controller
from pocketlib.control.status import render
from pocketlib.errors import ConfigError, TokenError, UnknownJobError

SECRET = "logic"
MiB = 1 << 20


def join(c: Controller, name: str, port: int, **load: object) -> None:
    body = {"name": name, "address": f"127.0.0.1:{port}", "tier": "dram",
            "capacity": 64 * MiB, "bandwidth": 100_000_000}  # fmt: skip
    token = node_token(SECRET.encode(), name)
    c.register_node(body, token)
    c.heartbeat({**body, **load}, token)


def beat(c: Controller, name: str, **load: object) -> dict[str, object]:
    return c.heartbeat({"name": name, **load}, node_token(SECRET.encode(), name))


def test_a_drain_waits_for_the_tier_to_stay_cold() -> None:
    c = Controller(secret=SECRET, scale_down_delay=3600, dead_after=3600)
    for i in range(3):
        join(c, f"n{i}", 7000 + i)
    for _ in range(5):
        assert [d.action for d in c.tick()] == []  # cold, but not for an hour yet
    c.scale_down_delay = 0
    (drain,) = c.tick()
    assert drain.action == "drain"
    assert c.nodes[drain.node or ""].state == "draining"
    assert beat(c, drain.node or "")["drain"] is True  # the node is told on its heartbeat


def test_a_draining_node_is_stopped_only_after_confirming_and_emptying() -> None:
    c = Controller(secret=SECRET, scale_down_delay=0, dead_after=3600)
    for i in range(3):
        join(c, f"n{i}", 7000 + i)
    (drain,) = c.tick()
    name = drain.node or ""
    c.nodes[name].provisioned = True  # (as if a provisioner had started it)
    beat(c, name, draining=False, used=0)  # has not applied it yet
    assert all(d.action != "stop" for d in c.tick())
    beat(c, name, draining=True, used=4096)  # applied, but still holds data
    beat(c, name, draining=True, used=4096)
    assert all(d.action != "stop" for d in c.tick())
    beat(c, name, draining=True, used=0)
    assert any(d.action == "stop" and d.node == name for d in c.tick())
    assert name not in c.nodes


def test_jobs_shrink_off_a_drained_node() -> None:
    c = Controller(secret=SECRET, scale_down_delay=0, dead_after=3600)
    for i in range(3):
        join(c, f"n{i}", 7000 + i)
    ticket = c.register_job("wide", JobHints(capacity=150 * MiB))  # all three nodes
    assert len(ticket.maps[-1].weights) == 3
    (drain,) = [d for d in c.tick() if d.action == "drain"]
    gone = c.nodes[drain.node or ""].address
    after = c.ticket(ticket.job)
    assert after.version == ticket.version + 1
    assert gone not in after.maps[-1].weights
    assert gone in after.maps[0].weights  # older versions still name it: reads look there


def test_dead_nodes_leave_the_newest_map() -> None:
    c = Controller(secret=SECRET, dead_after=0.05, scale_down_delay=3600)
    join(c, "a", 7001)
    join(c, "b", 7002)
    ticket = c.register_job("j", JobHints(capacity=100 * MiB))
    time.sleep(0.1)
    beat(c, "a")
    c.tick()
    assert c.nodes["b"].state == "dead"
    after = c.ticket(ticket.job)
    assert after.lost == frozenset({"127.0.0.1:7002"})
    assert list(after.maps[-1].weights) == ["127.0.0.1:7001"]
    beat(c, "b")  # it was unreachable, not gone: it comes back with its data
    assert c.nodes["b"].state == "active"


def test_deregistered_jobs_are_dropped_by_late_nodes() -> None:
    c = Controller(secret=SECRET)
    join(c, "a", 7001)
    ticket = c.register_job("j", JobHints(capacity=MiB))
    c.deregister_job(ticket.job, ticket.token)  # the node is unreachable (port 7001 is closed)
    reply = beat(c, "a", jobs={ticket.job: 100})
    assert reply["delete_jobs"] == [ticket.job]
    with pytest.raises(UnknownJobError, match="deregistered"):
        c.ticket(ticket.job, ticket.token)


def test_tokens_are_checked() -> None:
    c = Controller(secret=SECRET)
    join(c, "a", 7001)
    ticket = c.register_job("j", JobHints(capacity=MiB))
    assert ticket.token == job_token(SECRET.encode(), ticket.job)
    with pytest.raises(TokenError):
        c.deregister_job(ticket.job, b"\0" * 16)
    with pytest.raises(TokenError):
        c.heartbeat({"name": "a"}, node_token(b"other secret", "a"))


def test_jobs_stripe_only_across_hosts() -> None:
    from pocketlib.ticket import DEFAULT_STRIPE_SIZE, UNSTRIPED

    same = Controller(secret=SECRET)
    join(same, "a", 7001)
    join(same, "b", 7002)
    assert same.register_job("j", JobHints(capacity=100 * MiB)).stripe_size == UNSTRIPED
    spread = Controller(secret=SECRET)
    for name, host in (("a", "10.0.0.1"), ("b", "10.0.0.2")):
        body = {"name": name, "address": f"{host}:7000", "tier": "dram",
                "capacity": 64 * MiB, "bandwidth": 100_000_000}  # fmt: skip
        spread.register_node(body, node_token(SECRET.encode(), name))
    ticket = spread.register_job("j", JobHints(capacity=100 * MiB))
    assert len(ticket.maps[-1].weights) == 2
    assert ticket.stripe_size == DEFAULT_STRIPE_SIZE


def test_a_job_spans_tiers_when_its_cheapest_cannot_hold_it() -> None:
    c = Controller(secret=SECRET, dead_after=3600)
    GiB = 1 << 30
    for name, tier, bandwidth, port in (("h", "hdd", 20_000_000, 7001),
                                        ("v", "nvme", 100_000_000, 7002)):  # fmt: skip
        body = {"name": name, "address": f"127.0.0.1:{port}", "tier": tier, "capacity": GiB,
                "bandwidth": bandwidth}  # fmt: skip
        c.register_node(body, node_token(SECRET.encode(), name))
    hints = JobHints(latency_sensitive=False, capacity=GiB + GiB // 2, peak_throughput=10**7)
    ticket = c.register_job("big", hints)
    weights = ticket.maps[-1].weights
    assert set(weights) == {"127.0.0.1:7001", "127.0.0.1:7002"}  # hdd first, nvme for the rest
    assert weights["127.0.0.1:7001"] > weights["127.0.0.1:7002"]
    c.tick()
    time.sleep(0.01)
    c.tick()
    usage = c.status()["usage"]["jobs"][ticket.job]
    assert set(usage) == {"hdd", "nvme"}  # billed on each tier for its share
    assert usage["hdd"]["capacity_s"] > usage["nvme"]["capacity_s"] > 0
    (row,) = c.status()["jobs"]
    assert row["tiers"] == ["hdd", "nvme"]
    assert "hdd+nvme" in render(c.status())
    # A latency-sensitive job never leaves DRAM: this cluster has none.
    with pytest.raises(ConfigError, match="DRAM"):
        c.register_job("fast", JobHints(capacity=GiB))


def test_a_node_is_added_only_when_the_tier_stays_hot() -> None:
    from pocketlib.control.provisioners import LocalProvisioner

    provisioner = LocalProvisioner()
    c = Controller(secret=SECRET, scale_up_delay=3600, dead_after=3600, provisioner=provisioner)
    c.address = "127.0.0.1:9"  # (the node it starts will not reach it; it is only counted)
    c.tiers = {"dram": c.tiers["dram"]}
    join(c, "a", 7001, net=95_000_000)  # 95% of its 100 MB/s
    try:
        for _ in range(3):
            assert c.tick() == []  # hot, but not for an hour yet
        c.scale_up_delay = 0
        (add,) = c.tick()
        assert (add.action, add.tier) == ("add", "dram")
        assert "net at 95%" in add.reason
        assert len(c.starting) == 1
    finally:
        provisioner.close()


def test_state_file_survives_concurrent_changes_and_the_loop(tmp_path: object) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = f"{tmp_path}/state.json"
    c = Controller(secret=SECRET, state_path=path, scale_down_delay=0, dead_after=3600)
    for i in range(3):
        join(c, f"n{i}", 7000 + i)
    with ThreadPoolExecutor(8) as pool:  # every registration saves; none may fail or be lost
        tickets = list(pool.map(lambda i: c.register_job(f"j{i}", JobHints(capacity=MiB)),
                                range(40)))  # fmt: skip
    assert len(Controller(state_path=path).jobs) == 40
    for t in tickets[1:]:
        c.deregister_job(t.job, t.token)
    wide = c.register_job("wide", JobHints(capacity=150 * MiB))
    drains = [d for d in c.tick() if d.action == "drain"]  # a new map version for "wide"
    assert drains
    after = c.ticket(wide.job)
    assert after.version > wide.version
    again = Controller(state_path=path)  # a restart sees what the loop decided
    assert again.ticket(wide.job).maps == after.maps
