"""A Job survives fork(): the child opens its own sockets and the parent keeps its own."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

import pocketlib


def _open_sockets(job: pocketlib.Job) -> set[tuple[str, int]]:
    """Local addresses of the job's idle pooled connections."""
    out = set()
    for pool in job.client.pools.values():
        for conn in list(pool._idle):
            out.add(conn.sock.getsockname())
    return out


def _child(job: pocketlib.Job, parent_sockets: set[tuple[str, int]], out: Any) -> None:
    try:
        assert job.get("from-parent") == b"parent data"
        job.put("from-child", b"child data")
        assert job.get("from-child") == b"child data"
        job.put_many({f"child/{i}": bytes([i]) * 1000 for i in range(20)})
        assert len(job.get_many([f"child/{i}" for i in range(20)])) == 20
        with job.writer("child-stream", chunk_size=64 * 1024) as w:
            w.write(os.urandom(300_000))
        mine = _open_sockets(job)
        assert mine, "the child holds no connection of its own"
        assert not mine & parent_sockets, "the child reused the parent's socket"
        out.put(None)
    except BaseException as exc:
        out.put(repr(exc))


@pytest.mark.timeout(60)
def test_job_used_across_fork(job: pocketlib.Job) -> None:
    job.put("from-parent", b"parent data")
    assert job.get("from-parent") == b"parent data"
    parent_sockets = _open_sockets(job)
    assert parent_sockets  # the parent has a pooled connection the child inherits
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    children = [ctx.Process(target=_child, args=(job, parent_sockets, out)) for _ in range(3)]
    for c in children:
        c.start()
    errors = [out.get(timeout=30) for _ in children]
    for c in children:
        c.join(timeout=30)
        assert c.exitcode == 0
    assert errors == [None, None, None]
    # The parent's connections were not disturbed by the children using or closing theirs.
    assert _open_sockets(job) == parent_sockets
    assert job.get("from-parent") == b"parent data"
    assert job.get("from-child") == b"child data"
    job.put("parent-after", b"still mine")
    assert job.get("parent-after") == b"still mine"
    assert job.stat("child-stream").size == 300_000
    assert len(list(job.list("child/"))) == 20


@pytest.mark.timeout(60)
def test_os_fork_child_closes_its_job(job: pocketlib.Job) -> None:
    job.put("k", b"v")
    pid = os.fork()
    if pid == 0:  # the child: use the job, close it, and leave without cleanup handlers
        code = 1
        try:
            job.put("child", b"c")
            code = 0 if job.get("k") == b"v" else 2
            job.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert job.get("child") == b"c"
    job.put("after", b"a")
    assert job.get("after") == b"a"
