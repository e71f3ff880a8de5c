"""Waiting until keys are stored: the node answers when they are, nobody polls."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from _helpers import grow

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.errors import PocketTimeoutError


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(node_capacity="32MiB", autoscale=False, tick=0.2) as c:
        yield c


@pytest.fixture
def job(cluster: LocalCluster) -> Iterator[pocketlib.Job]:
    with cluster.client() as client:
        j = client.register_job("waits", JobHints(capacity="16MiB"))
        yield j
        j.deregister()


def requests(job: pocketlib.Job) -> int:
    return sum(s["job_ops"].get(job.ticket.job, 0) for s in job.stats().values())


def test_a_reader_that_starts_first_wakes_when_the_writers_are_done(
    cluster: LocalCluster, job: pocketlib.Job
) -> None:
    keys = [f"part/{m}" for m in range(6)]
    writer = cluster.client().attach(job.ticket)

    def write() -> None:
        for k in keys:
            time.sleep(0.05)
            writer.put(k, k.encode())

    before = requests(job)
    t = threading.Thread(target=write)
    t.start()
    job.wait_for(keys, timeout=30)
    assert job.get_many(keys) == {k: k.encode() for k in keys}
    t.join()
    # Six puts, one WAIT per node and few repeats, the get_many: no polling loop.
    assert requests(job) - before <= 6 + 2 * len(job.ticket.nodes) * 3 + 2


def test_a_wait_times_out_naming_what_is_missing(job: pocketlib.Job) -> None:
    job.put("here", b"1")
    with pytest.raises(PocketTimeoutError, match=r"1 key\(s\) not stored within 0.3 s: absent"):
        job.wait_for(["here", "absent"], timeout=0.3)
    job.wait_for(["here"], timeout=0)  # (already stored: no wait at all)


def test_a_waiter_with_an_old_ticket_is_woken_by_a_new_map_and_waits_where_it_routes(
    cluster: LocalCluster, job: pocketlib.Job
) -> None:
    c = cluster.controller
    old = cluster.client().attach(job.ticket)
    got: list[BaseException | None] = []

    def wait() -> None:
        try:
            old.wait_for([f"late/{i}" for i in range(20)], timeout=30)
            got.append(None)
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    grow(c, job.ticket.job)  # v2, over the other node
    assert job.refresh()
    job.put_many({f"late/{i}": b"x" for i in range(20)})  # some only v2 sends to b
    t.join(timeout=60)
    assert got == [None]
    assert old.ticket.version == 2
