"""LocalLambda: a process per environment, warm reuse, and AWS's limits with AWS's errors."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster
from pocketlib.serverless.invocation import LambdaError
from pocketlib.serverless.runtime import LocalLambda

TESTS = str(Path(__file__).parent)
ENV = {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}


def fn(handler: str, **kw: Any) -> LocalLambda:
    return LocalLambda(f"lambda_fns.handlers.{handler}", env=ENV, **kw)


def test_cold_then_warm_with_the_context_and_environment_of_aws() -> None:
    with fn("describe", memory_mb=256, timeout_s=10) as f:
        first = f.invoke({"a": 1})
        second = f.invoke({"a": 2})
    assert first.cold
    assert not second.cold
    one, two = first.json(), second.json()
    assert one["event"] == {"a": 1}
    assert (one["calls"], two["calls"]) == (1, 2)  # globals persist while warm
    assert one["pid"] == two["pid"]
    assert (one["tmp_kept"], two["tmp_kept"]) == (False, True)  # so does /tmp
    assert one["tmpdir"] != "/tmp"  # private to the environment
    assert one["types"] == dict.fromkeys(one["types"], "str")  # memory_limit_in_mb too
    assert one["memory"] == "256"
    assert 0 < one["remaining"] <= 10_000
    assert one["in_lambda"] is True


def test_concurrent_invocations_get_environments_of_their_own() -> None:
    with fn("sleep") as f, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: f.invoke({"seconds": 0.5}), range(3)))
        assert [r.json() for r in results] == ["woke"] * 3
        assert f.cold_starts == 3
        assert f.environments == 3


def test_the_timeout_kills_the_environment_with_aws_s_message() -> None:
    with fn("sleep", timeout_s=1) as f:
        out = f.invoke({"seconds": 30})
        assert out.function_error == "Unhandled"
        error = out.json()
        assert error["errorType"] == "Sandbox.Timedout"
        assert error["errorMessage"].endswith("Task timed out after 1.00 seconds")
        assert f.invoke({"seconds": 0}).cold  # the next one starts again


def test_memory_over_the_limit_kills_the_environment() -> None:
    with fn("hog", memory_mb=128, timeout_s=30) as f:
        out = f.invoke({"mb": 400})
        assert out.function_error == "Unhandled"
        assert out.json()["errorType"] == "Runtime.ExitError"
        assert "signal: killed" in out.json()["errorMessage"]
        assert f.invoke({"mb": 1}).json() == 1


def test_a_raising_handler_reports_type_message_and_trace() -> None:
    with fn("fail") as f:
        error = f.invoke({"n": 7}).json()
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input 7"
    assert any("in fail" in line for line in error["stackTrace"])


def test_payload_limits_are_aws_s_to_the_byte() -> None:
    with fn("sized") as f:
        at_limit = b'{"n": 1, "pad": "' + b"x" * (6_291_456 - 19) + b'"}'
        assert len(at_limit) == 6_291_456
        assert f.invoke(payload=at_limit).json() == "x"
        with pytest.raises(LambdaError) as caught:
            f.invoke(payload=at_limit[:-2] + b'x"}')
        assert caught.value.error_type == "RequestEntityTooLargeException"
        assert "6291456 bytes for the InvokeFunction operation" in caught.value.message
        async_over = b'{"n": 1, "pad": "' + b"x" * (1_048_576 - 18) + b'"}'
        with pytest.raises(LambdaError, match="Event invocation type"):
            f.invoke(payload=async_over, invocation_type="Event")
        limit = 6 * 1024 * 1024 + 100
        assert len(f.invoke({"n": limit - 2}).payload) == limit  # (JSON: two quotes more)
        big = f.invoke({"n": limit - 1})  # one byte over
        assert big.function_error == "Unhandled"
        assert big.json()["errorType"] == "Function.ResponseSizeTooLarge"
        assert f"({limit + 1} bytes)" in big.json()["errorMessage"]


def test_no_dev_shm_inside() -> None:
    with fn("queue") as f:
        assert f.invoke({}).json() == "OSError: [Errno 38] Function not implemented"


def test_unmodified_boto3_code_invokes_it() -> None:
    boto3 = pytest.importorskip("boto3")
    with fn("describe", name="describe") as f:
        url = f.serve()
        client = boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
        reply = client.invoke(FunctionName="describe", Payload=json.dumps({"via": "boto3"}))
        assert reply["StatusCode"] == 200
        assert json.loads(reply["Payload"].read())["event"] == {"via": "boto3"}
        failed = client.invoke(FunctionName="describe", Payload=b"[1, 2")
        assert failed["FunctionError"] == "Unhandled"
        with pytest.raises(client.exceptions.ClientError) as caught:
            client.invoke(FunctionName="describe", Payload=b"x" * (6_291_456 + 1))
        assert caught.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="another", Payload=b"{}")
        assert client.invoke(FunctionName="describe", InvocationType="Event",
                             Payload=b"{}")["StatusCode"] == 202  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(node_capacity="256MiB", autoscale=False, tick=0.2) as c:
        yield c


def test_a_decorated_handler_returns_50_mb_through_a_6_mb_invoke(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        job = client.register_job("lambda", JobHints(capacity="128MiB"))
        with fn("pocket", memory_mb=1024, timeout_s=60) as f:
            cold = f.invoke({"ticket": job.ticket.to_json(), "n": 1})
            assert cold.json() is True  # is_cold_start() inside the first invocation
            out = f.invoke({"ticket": job.ticket.to_json(), "n": 2, "mb": 50})
            assert out.function_error is None
            ref = out.json()
            assert pls.is_ref(ref)
            assert len(out.payload) < 1000
            value = pls.resolve(ref, job)
            assert len(value) == 50 << 20
        assert job.get("from-lambda") == b"2"
        job.deregister()


def test_a_handler_must_be_importable() -> None:
    def local(event: Any, context: Any) -> None:
        return None

    with pytest.raises(pocketlib.ConfigError, match="module level"):
        LocalLambda(local)


def test_an_idle_environment_is_frozen_between_invocations() -> None:
    with fn("ticker") as f:
        f.invoke({"run": 0.2})
        before = f.invoke({}).json()
        time.sleep(0.5)  # frozen: its thread does not run
        after = f.invoke({}).json()
    assert after - before < 10  # (it ran for 0.5 s at 100 ticks a second if not frozen)


# -- the same handlers under AWS's own runtime interface client --------------------------------


def test_aws_s_runtime_client_runs_the_same_handlers(cluster: LocalCluster) -> None:
    pytest.importorskip("awslambdaric")
    with fn("describe", runtime="awslambdaric", memory_mb=256) as f:
        one, two = f.invoke({"a": 1}).json(), f.invoke({"a": 2}).json()
    assert one["event"] == {"a": 1}
    assert (one["calls"], two["calls"]) == (1, 2)
    assert one["types"] == dict.fromkeys(one["types"], "str")
    assert one["memory"] == "256"
    with fn("fail", runtime="awslambdaric") as f:
        out = f.invoke({"n": 9})
    assert out.function_error == "Unhandled"
    assert (out.json()["errorType"], out.json()["errorMessage"]) == ("ValueError", "bad input 9")
    with fn("queue", runtime="awslambdaric") as f:
        assert f.invoke({}).json() == "OSError: [Errno 38] Function not implemented"
    with fn("sleep", runtime="awslambdaric", timeout_s=1) as f:
        assert f.invoke({"seconds": 30}).json()["errorType"] == "Sandbox.Timedout"
    with LocalLambda("lambda_fns.nowhere.handler", env=ENV, runtime="awslambdaric") as f:
        assert f.invoke({}).json()["errorType"] == "Runtime.ImportModuleError"
    with cluster.client() as client:
        job = client.register_job("ric", JobHints(capacity="64MiB"))
        with fn("pocket", runtime="awslambdaric", timeout_s=60) as f:
            assert f.invoke({"ticket": job.ticket.to_json(), "n": 3}).json() is True
            ref = f.invoke({"ticket": job.ticket.to_json(), "n": 4, "mb": 20}).json()
            assert len(pls.resolve(ref, job)) == 20 << 20
        assert job.get("from-lambda") == b"4"
        job.deregister()


def test_a_function_killed_mid_write_publishes_nothing(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        job = client.register_job("killed", JobHints(capacity="32MiB"))
        with fn("dies_while_writing", timeout_s=1) as f:
            out = f.invoke({"ticket": job.ticket.to_json(), "seconds": 30})
        assert out.json()["errorType"] == "Sandbox.Timedout"
        assert list(job.list("killed/")) == []
        reader = pls.ShuffleReader(job, "killed", reducer=0, mappers=1)
        with pytest.raises(pocketlib.PocketTimeoutError):
            reader.read(timeout=0.2)
        job.deregister()
