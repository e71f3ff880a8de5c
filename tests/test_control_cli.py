"""`pocket controller`, `pocket up`, `pocket status`, and a controller that restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from _helpers import pocket_command, wait_until

import pocketlib
from pocketlib import JobHints
from pocketlib.cli import parse_band, parse_counts, parse_tier
from pocketlib.control.controller import Controller
from pocketlib.control.processes import NodeProcess, terminate
from pocketlib.control.server import ControlServer
from pocketlib.errors import ConfigError, TransportError, UnknownJobError

SECRET = "test-cluster-secret"


def start(args: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*pocket_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )  # fmt: skip


@pytest.fixture
def controller_proc() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = start(["controller", "--port", "0", "--dead-after", "2"], POCKET_SECRET=SECRET)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address, proc.stderr.read() if proc.stderr else ""
        yield proc, address
    finally:
        terminate(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_controller_with_nodes_started_by_hand(
    controller_proc: tuple[subprocess.Popen[str], str],
) -> None:
    _, address = controller_proc
    args = ["--controller", address, "--heartbeat", "0.2"]
    with (
        NodeProcess("dram", "32MiB", extra_args=[*args, "--name", "good"],
                    env={"POCKET_SECRET": SECRET}),
        NodeProcess("dram", "32MiB", extra_args=[*args, "--name", "intruder"],
                    env={"POCKET_SECRET": "not-the-secret"}),
        pocketlib.Client(address) as client,
    ):  # fmt: skip
        wait_until(lambda: [n["name"] for n in client.status()["nodes"]] == ["good"])
        job = client.register_job("by-hand", JobHints(capacity="4MiB"))
        job.put("k", b"v")
        assert job.get("k") == b"v"
        job.deregister()
        # The node that does not hold the secret never joined.
        assert [n["name"] for n in client.status()["nodes"]] == ["good"]


def test_a_managed_node_needs_the_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "POCKET_SECRET"}
    proc = subprocess.run(
        [*pocket_command(), "node", "--controller", "127.0.0.1:9", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "secret" in proc.stderr


def test_up_status_and_stop() -> None:
    proc = start(["up", "--port", "0", "--node-capacity", "32MiB"])
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        with pocketlib.Client(address) as client:
            job = client.register_job("cli", JobHints(capacity="1MiB"))
            job.put("k", b"v")
            nodes = client.status()["nodes"]
        assert len(nodes) == 2
        text = subprocess.run([*pocket_command(), "status", address], capture_output=True,
                              text=True, check=True, timeout=60).stdout  # fmt: skip
        assert "local-dram-1" in text
        assert job.ticket.job in text
        command = [*pocket_command(), "status", address, "--json"]
        raw = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
        raw = raw.stdout
        assert {n["name"] for n in json.loads(raw)["nodes"]} == {"local-dram-1", "local-dram-2"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        # Every node went with it.
        for node in nodes:
            with pytest.raises(TransportError):
                pocketlib.connect([node["address"]], job="gone")
    finally:
        terminate(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_status_of_nothing_is_a_clear_error() -> None:
    proc = subprocess.run([*pocket_command(), "status", "127.0.0.1:9"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert "127.0.0.1:9" in proc.stderr


def test_flag_parsers() -> None:
    spec = parse_tier("nvme:100GiB:2GB/s:0.5")
    assert (spec.name, spec.node_capacity, spec.node_bandwidth, spec.price_per_hour) == (
        "nvme", 100 * 2**30, 2 * 10**9, 0.5)  # fmt: skip
    assert parse_tier("dram:1GiB:1GB/s").price_per_hour == 0.532  # priced like r4.2xlarge
    assert parse_counts(["dram=2", "hdd=0"], "--min") == {"dram": 2, "hdd": 0}
    assert parse_band("60-80") == parse_band("0.6-0.8")
    for bad in ("dram", "dram:1GiB", "dram:x:1GB/s", "dram:1GiB:1GB/s:cheap"):
        with pytest.raises(ConfigError):
            parse_tier(bad)
    for bad_band in ("80-60", "high", "60"):
        with pytest.raises(ConfigError):
            parse_band(bad_band)
    with pytest.raises(ConfigError):
        parse_counts(["dram"], "--min")


def test_controller_restart_with_a_state_file(tmp_path: pytest.TempPathFactory) -> None:
    """Jobs, tokens and weight maps survive a restart; nodes re-register by themselves."""
    state = str(tmp_path / "state.json")  # type: ignore[operator]
    first = Controller(secret=SECRET, state_path=state, dead_after=2)
    server = ControlServer(first, tick=0.1).start()
    port = server.address.port
    args = ["--controller", str(server.address), "--heartbeat", "0.2", "--name", "n1"]
    with NodeProcess("dram", "32MiB", extra_args=args, env={"POCKET_SECRET": SECRET}):
        client = pocketlib.Client(str(server.address))
        wait_until(lambda: len(client.status()["nodes"]) == 1)
        job = client.register_job("durable", JobHints(capacity="4MiB"))
        job.put("k", b"kept")
        server.stop()
        assert os.stat(state).st_mode & 0o077 == 0  # it holds the secret
        # The data plane does not need the controller.
        assert job.get("k") == b"kept"
        second = Controller(state_path=state, dead_after=2)
        server = ControlServer(second, port=port, tick=0.1).start()
        try:
            assert job.refresh() is False  # the same ticket as before
            wait_until(lambda: client.status()["nodes"][0]["state"] == "active")
            assert client.status()["jobs"][0]["id"] == job.ticket.job
            assert job.deregister()["objects"] == 1
        finally:
            server.stop()
            client.close()


def test_controller_restart_without_state_forgets_jobs_clearly() -> None:
    first = Controller(secret=SECRET, dead_after=2)
    server = ControlServer(first, tick=0.1).start()
    port = server.address.port
    args = ["--controller", str(server.address), "--heartbeat", "0.2"]
    with NodeProcess("dram", "32MiB", extra_args=args, env={"POCKET_SECRET": SECRET}):
        client = pocketlib.Client(str(server.address))
        wait_until(lambda: len(client.status()["nodes"]) == 1)
        job = client.register_job("forgotten", JobHints(capacity="4MiB"))
        job.put("k", b"still here")
        server.stop()
        server = ControlServer(Controller(secret=SECRET, dead_after=2), port=port,
                               tick=0.1).start()  # fmt: skip
        try:
            with pytest.raises(UnknownJobError, match="not registered"):
                job.refresh()
            # Tokens are signed, not stored: the job's functions keep working.
            assert job.get("k") == b"still here"
            wait_until(lambda: len(client.status()["nodes"]) == 1)  # the node re-registered
        finally:
            server.stop()
            client.close()


def test_controller_with_the_local_provisioner_starts_and_stops_its_nodes() -> None:
    from test_controller import processes_mentioning

    proc = start(["controller", "--port", "0", "--provisioner", "local", "--min", "dram=2",
                  "--tier", "dram:32MiB:100MB/s"])  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        with pocketlib.Client(address) as client:
            wait_until(lambda: len(client.status()["nodes"]) == 2, what="the minimum fleet")
            job = client.register_job("local", JobHints(capacity="8MiB"))
            job.put("k", b"v")
            assert job.get("k") == b"v"
            (node,) = [n for n in client.status()["nodes"] if n["jobs"]]
            assert node["capacity"] == 32 * 2**20  # the --tier spec
            job.deregister()
        assert len(processes_mentioning(f"--controller\0{address}")) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert processes_mentioning(f"--controller\0{address}") == []
    finally:
        terminate(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
