"""The Lambda handler decorator and payloads by reference, against a real LocalCluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster, Ticket
from pocketlib.errors import (
    ChecksumError,
    ConfigError,
    NotFoundError,
    PocketTimeoutError,
    TokenError,
)
from pocketlib.routing import WeightMap
from pocketlib.serverless import decorator

MiB = 1024 * 1024


@dataclass
class Context:
    """The attributes and types of AWS's Python runtime context (memory_limit_in_mb is a str
    there too), with a clock of its own."""

    remaining_ms: int = 60_000
    function_name: str = "fn"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    memory_limit_in_mb: str = "1024"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    log_group_name: str = "/aws/lambda/fn"
    log_stream_name: str = "2026/12/06/[$LATEST]abc"
    identity: Any = None
    client_context: Any = None
    calls: list[int] = field(default_factory=list)

    def get_remaining_time_in_millis(self) -> int:
        self.calls.append(self.remaining_ms)
        return self.remaining_ms


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2) as c:
        yield c


@pytest.fixture
def job(cluster: LocalCluster) -> Iterator[pocketlib.Job]:
    with cluster.client() as client:
        j = client.register_job("fn", JobHints(capacity="16MiB"))
        yield j
        j.deregister()


@pytest.fixture(autouse=True)
def fresh_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test is a new execution environment (the decorator's module state)."""
    monkeypatch.setattr(decorator, "_env", decorator._Environment())
    monkeypatch.delenv(decorator.TICKET_ENV, raising=False)
    yield
    for attached in decorator._env.jobs.values():
        attached.close()


def test_the_job_comes_from_the_event_and_is_reused_while_warm(job: pocketlib.Job) -> None:
    seen: list[pocketlib.Job] = []

    @pls.handler
    def handle(event: dict[str, Any], context: Any, job: pocketlib.Job) -> dict[str, Any]:
        seen.append(job)
        job.put(f"out/{event['n']}", job.get("in") + str(event["n"]).encode())
        return {"n": event["n"], "cold": pls.is_cold_start()}

    job.put("in", b"x")
    ticket = job.ticket.to_json()
    first = handle({"ticket": ticket, "n": 1}, Context())
    node = job.router.write_node(b"in")
    before = job.client.node_stats([node])[node]["connections_total"]
    second = handle({"ticket": json.loads(ticket), "n": 2}, Context())
    assert first == {"n": 1, "cold": True}
    assert second == {"n": 2, "cold": False}
    assert seen[0] is seen[1]  # attached once per environment
    assert job.client.node_stats([node])[node]["connections_total"] == before  # no connect
    assert job.get("out/1") == b"x1"
    assert job.get("out/2") == b"x2"


def test_the_ticket_may_come_from_the_environment(
    job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKET_TICKET", job.ticket.to_json())

    @pls.handler(ticket_key="pocket")
    def handle(event: Any, context: Any, job: pocketlib.Job) -> None:
        job.put("env", b"from POCKET_TICKET")

    assert handle({"other": 1}, Context()) is None
    assert job.get("env") == b"from POCKET_TICKET"


def test_missing_forged_and_deregistered_tickets_give_clear_errors(
    cluster: LocalCluster, job: pocketlib.Job
) -> None:
    @pls.handler
    def handle(event: Any, context: Any, job: pocketlib.Job) -> bytes:
        return job.get("k")

    with pytest.raises(ConfigError, match=r"no pocketlib ticket.*'ticket'.*POCKET_TICKET"):
        handle({"n": 1}, Context())
    with pytest.raises(ConfigError, match="not a pocketlib ticket"):
        handle({"ticket": "{not json"}, Context())
    forged = job.ticket.as_dict()
    forged["token"] = "00" * 16
    with pytest.raises(TokenError):
        handle({"ticket": forged}, Context())
    with cluster.client() as client:
        gone = client.register_job("gone", JobHints(capacity="1MiB"))
        gone.deregister()
    with pytest.raises(pocketlib.UnknownJobError):
        handle({"ticket": gone.ticket.to_json()}, Context())


def test_options_are_keyword_only() -> None:
    with pytest.raises(ConfigError, match="keyword"):
        pls.handler(1.0)  # type: ignore[call-overload]


def test_a_handler_that_raises_passes_its_error_through(job: pocketlib.Job) -> None:
    @pls.handler
    def handle(event: Any, context: Any, job: pocketlib.Job) -> None:
        raise ValueError("bad part 7")

    with pytest.raises(ValueError, match="bad part 7"):
        handle({"ticket": job.ticket.to_json()}, Context())
    assert job.client.deadline.at is None


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A TCP server that accepts and never answers: a node that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    t.join()
    for s in held:
        s.close()
    server.close()


@pytest.mark.timeout(30)
def test_a_blocked_call_times_out_before_the_invocation_does(blackhole: str) -> None:
    """Without the deadline the read would wait for the client's 60 s io timeout."""
    ticket = Ticket("hang-1", "hang", b"t" * 16, (WeightMap(1, {blackhole: 1.0}),))

    @pls.handler(margin=0.2)
    def handle(event: Any, context: Any, job: pocketlib.Job) -> bytes:
        return job.get("k")

    ctx = Context(remaining_ms=700)
    with pytest.raises(PocketTimeoutError):
        handle({"ticket": ticket.to_json()}, ctx)
    assert ctx.calls == [700]


def test_idle_connections_are_dropped_after_a_freeze(job: pocketlib.Job) -> None:
    """Sockets an environment kept while frozen may be dead; after ``revalidate_after`` they
    are dropped before use, so the put goes once over a new connection."""

    @pls.handler(revalidate_after=0.0)
    def handle(event: Any, context: Any, job: pocketlib.Job) -> None:
        job.put("k", event["v"].encode())

    ticket = job.ticket.to_json()
    handle({"ticket": ticket, "v": "one"}, Context())
    attached = next(iter(decorator._env.jobs.values()))
    node = attached.router.write_node(b"k")
    for conn in attached.client.pools[node]._idle:  # purged while frozen
        conn.sock.shutdown(socket.SHUT_RDWR)
    puts = job.client.node_stats([node])[node]["ops"].get("put", 0)
    handle({"ticket": ticket, "v": "two"}, Context())
    assert job.get("k") == b"two"
    assert job.client.node_stats([node])[node]["ops"].get("put", 0) == puts + 1
    assert all(not c.reused for c in attached.client.pools[node]._idle)


def test_inside_lambda_shared_memory_is_never_used(
    job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "1")

    @pls.handler
    def handle(event: Any, context: Any, job: pocketlib.Job) -> None:
        job.put("big", os.urandom(2 * MiB))

    handle({"ticket": job.ticket.to_json()}, Context())
    attached = next(iter(decorator._env.jobs.values()))
    node = attached.router.write_node(b"big")
    assert attached.client.arena(node) is None
    assert "shm_commit" not in job.client.node_stats([node])[node]["ops"]


def test_cold_start_is_per_process(job: pocketlib.Job) -> None:
    code = (
        "import json, sys, pocketlib.serverless as pls\n"
        "@pls.handler\n"
        "def h(event, context, job):\n"
        "    return pls.is_cold_start()\n"
        "t = sys.argv[1]\n"
        "print(json.dumps([h({'ticket': t}, None), h({'ticket': t}, None)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, job.ticket.to_json()], check=True,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert json.loads(out) == [True, False]


# -- payloads by reference ---------------------------------------------------------------------


def test_values_over_the_threshold_travel_by_reference(job: pocketlib.Job) -> None:
    small = {"a": [1, 2, 3]}
    assert pls.offload(small, job) is small  # under the sync limit: itself
    big = os.urandom(3 * MiB)  # 4 MiB as base64: over the async limit, under the sync one
    assert pls.offload(big, job) is big
    ref = pls.offload(big, job, invocation="async")
    assert pls.is_ref(ref)
    assert len(json.dumps(ref)) < 300
    payload = {"x": [1, {"blob": ref}], "y": pls.offload({"k": "v" * 100}, job, threshold=10)}
    assert pls.resolve(payload, job) == {"x": [1, {"blob": big}], "y": {"k": "v" * 100}}
    with pytest.raises(NotFoundError):  # read once, freed
        pls.resolve(ref, job)


def test_a_value_json_cannot_carry_always_goes_by_reference(job: pocketlib.Job) -> None:
    value = {1, 2, 3}
    ref = pls.offload(value, job, keep=True)
    assert pls.is_ref(ref)
    assert pls.resolve(ref, job) == value
    assert pls.resolve(ref, job) == value  # kept: several readers


def test_a_reference_never_resolves_to_other_bytes(job: pocketlib.Job) -> None:
    ref = pls.offload(b"the value", job, threshold=0)
    job.put(ref[pls.REF_KEY]["key"], b"other bytes")  # overwritten under its key
    with pytest.raises(ChecksumError):
        pls.resolve(ref, job)
    with pytest.raises(ConfigError, match="job"):
        pls.resolve({pls.REF_KEY: {**ref[pls.REF_KEY], "job": "another-job"}}, job)


def test_the_decorator_resolves_the_event_and_offloads_a_large_result(job: pocketlib.Job) -> None:
    result = os.urandom(7 * MiB)  # over the 6 MB a sync response may carry

    @pls.handler
    def handle(event: Any, context: Any, job: pocketlib.Job) -> bytes:
        assert event["input"] == b"by reference"
        return result

    event = {"ticket": job.ticket.to_json(),
             "input": pls.offload(b"by reference", job, threshold=0)}  # fmt: skip
    answer = handle(event, Context())
    assert pls.is_ref(answer)
    assert len(json.dumps(answer)) < 300
    assert pls.resolve(answer, job) == result


def test_it_composes_with_powertools_decorators_in_either_order(job: pocketlib.Job) -> None:
    powertools = pytest.importorskip("aws_lambda_powertools")
    logger = powertools.Logger(service="pocket-test")
    outer_first = logger.inject_lambda_context(
        pls.handler(lambda event, context, job: job.put("a", b"1") or pls.is_cold_start())
    )
    inner_first = pls.handler(
        logger.inject_lambda_context(lambda event, context, job: job.put("b", b"2") or "ok")
    )
    ticket = job.ticket.to_json()
    assert outer_first({"ticket": ticket}, Context()) is True
    assert inner_first({"ticket": ticket}, Context()) == "ok"
    assert job.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}


def test_the_package_stays_light() -> None:
    """``import pocketlib`` leaves it out; importing it pulls no cloud SDK."""
    code = (
        "import sys, pocketlib\n"
        "assert 'pocketlib.serverless' not in sys.modules\n"
        "import pocketlib.serverless\n"
        "heavy = {'boto3', 'botocore', 'lithops', 'awslambdaric', 'aws_lambda_powertools'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60).stdout  # fmt: skip
    assert out.strip() == "[]"
