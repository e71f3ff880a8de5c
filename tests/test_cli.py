"""The ``pocket`` command: a node's lifecycle, a bad option, and the demo job."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest
from _helpers import pocket_command

import pocketlib
from pocketlib.config import Address
from pocketlib.control.processes import NodeProcess


@pytest.fixture
def node_proc() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*pocket_command(), "node", "--tier", "dram", "--capacity", "64MiB",
         "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        for path in arena_files(proc.pid):  # left behind if the node failed to remove it
            os.unlink(path)


def arena_files(pid: int) -> list[str]:
    return glob.glob(f"/dev/shm/pocket-{pid}-*")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_node_serves_and_stops_cleanly(node_proc: subprocess.Popen[str], sig: int) -> None:
    assert node_proc.stdout is not None
    first = node_proc.stdout.readline().strip()
    address = Address.parse(first)  # the first line is host:port
    assert address.host == "127.0.0.1"
    assert address.port > 0
    shm = os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
    if shm:
        assert len(arena_files(node_proc.pid)) == 1
    with pocketlib.connect([first], job="cli") as job:
        job.put("k", b"served")
        assert job.get("k") == b"served"
        (stats,) = job.stats().values()
        assert stats["pid"] == node_proc.pid
        assert stats["tier"]["capacity"] == 64 * 1024 * 1024
    node_proc.send_signal(sig)
    assert node_proc.wait(timeout=30) == 0
    assert node_proc.stderr is not None
    stderr = node_proc.stderr.read()
    assert "Traceback" not in stderr
    assert arena_files(node_proc.pid) == [], "the node left its shared-memory arena behind"


@pytest.mark.timeout(60)
def test_node_stops_with_a_client_still_connected(node_proc: subprocess.Popen[str]) -> None:
    assert node_proc.stdout is not None
    address = node_proc.stdout.readline().strip()
    job = pocketlib.connect([address], job="idle-client")
    try:
        job.put("k", b"v")  # leaves an idle pooled connection open on the node
        node_proc.send_signal(signal.SIGTERM)
        assert node_proc.wait(timeout=30) == 0
    finally:
        job.close()
    assert arena_files(node_proc.pid) == []


def test_stats_prints_json(node: NodeProcess) -> None:
    result = subprocess.run(
        [*pocket_command(), "stats", str(node.address)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats[str(node.address)]["pid"] == node.pid
    assert stats[str(node.address)]["tier"]["tier"] == "dram"


def test_unknown_tier_is_refused() -> None:
    result = subprocess.run(
        [*pocket_command(), "node", "--tier", "no-such-tier", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stdout == ""  # no address printed
    assert "no-such-tier" in result.stderr
    assert "dram" in result.stderr  # the message names the installed drivers
    assert "Traceback" not in result.stderr


def test_bad_capacity_is_refused() -> None:
    result = subprocess.run(
        [*pocket_command(), "node", "--capacity", "lots", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "lots" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(180)
def test_demo_sorts_and_verifies() -> None:
    result = subprocess.run(
        [*pocket_command(), "demo", "--size", "8MiB", "--mappers", "2", "--reducers", "2",
         "--quiet"],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    # The demo names its node's pid; remove the arena if the node left it behind (that
    # is checked by the tests above, not here).
    for pid in re.findall(r"\(pid (\d+)\)", result.stdout):
        for path in arena_files(int(pid)):
            os.unlink(path)
    assert result.returncode == 0, result.stderr
    assert "output verified" in result.stdout
    assert "VERIFICATION FAILED" not in result.stdout
