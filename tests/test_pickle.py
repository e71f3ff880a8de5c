"""Tickets and jobs travel to functions as pickled arguments (Lithops, multiprocessing, Dask).

A Ticket pickles by value and compares equal after the round trip; a Job pickles by what opens
it again (its ticket, or its nodes and name in direct mode), never by its sockets.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
from collections.abc import Iterator

import pytest

import pocketlib
from pocketlib import JobHints, LocalCluster, Ticket
from pocketlib.config import Timeouts
from pocketlib.control.processes import NodeProcess
from pocketlib.routing import WeightMap


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(node_capacity="32MiB", autoscale=False, tick=0.2) as c:
        yield c


def test_a_ticket_pickles_and_compares_equal() -> None:
    maps = (WeightMap(1, {"a:1": 1.0}), WeightMap(3, {"a:1": 1.0, "b:2": 3.0}))
    maps[1].router.node_for(b"k")  # a cached router must not get in the way
    gone = {"lost": frozenset({"c:3"}), "retired": frozenset({"d:4"})}
    ticket = Ticket("j-1", "j", b"\x01token", maps, stripe_size=1 << 20, controller="e:5", **gone)
    back = pickle.loads(pickle.dumps(ticket))
    assert back == ticket
    assert back.as_dict() == ticket.as_dict()
    assert back.maps[1].router.node_for(b"k") == maps[1].router.node_for(b"k")


def _child_writes(job: pocketlib.Job, ticket: Ticket, key: str) -> str:
    """Runs in a spawned process: uses the unpickled job and a job attached from the ticket."""
    with job:
        job.put(key, job.get("from-driver") + b" and the child")
    with pocketlib.attach(ticket) as again:
        again.put(key + "-via-ticket", b"ticket")
    return job.ticket.job


def test_a_controller_job_and_its_ticket_pass_to_a_spawned_process(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as client:
        job = client.register_job("pickled", JobHints(capacity="4MiB"))
        job.put("from-driver", b"from the driver")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            got = pool.apply(_child_writes, (job, job.ticket, "out"))
        assert got == job.ticket.job
        assert job.get("out") == b"from the driver and the child"
        assert job.get("out-via-ticket") == b"ticket"
        job.deregister()


def test_a_direct_mode_job_pickles_by_its_nodes_and_name(
    two_nodes: list[NodeProcess],
) -> None:
    nodes = [str(n.address) for n in two_nodes]
    timeouts = Timeouts(connect=2.0, io=30.0)
    with pocketlib.connect(nodes, job="direct-pickle", timeouts=timeouts,
                           stripe_size=1 << 16) as job:  # fmt: skip
        job.put("from-driver", b"direct")
        back = pickle.loads(pickle.dumps(job))
        with back:
            assert back.get("from-driver") == b"direct"
            assert back.ticket.stripe_size == 1 << 16
            assert back.client.timeouts == timeouts
            assert back.client is not job.client  # its own connections
            back.put("from-copy", b"copy")
        assert job.get("from-copy") == b"copy"
        job.purge()


def _lithops_task(job: pocketlib.Job, i: int) -> int:
    job.put(f"part-{i}", bytes([i]) * (i + 1))
    return i


def test_a_job_is_an_argument_of_a_lithops_map(cluster: LocalCluster, tmp_path: object) -> None:
    lithops = pytest.importorskip("lithops")
    with cluster.client() as client:
        job = client.register_job("lithops-args", JobHints(capacity="4MiB"))
        config = {
            "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
            "localhost": {"runtime": sys.executable, "worker_processes": 2},
        }
        fexec = lithops.LocalhostExecutor(config=config)
        futures = fexec.map(_lithops_task, [(job, i) for i in range(4)])
        assert sorted(fexec.get_result(futures)) == [0, 1, 2, 3]
        fexec.clean()
        for i in range(4):
            assert job.get(f"part-{i}") == bytes([i]) * (i + 1)
        job.deregister()
