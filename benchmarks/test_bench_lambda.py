"""pytest-benchmark: a 50 MB result through a 6 MB-limited Lambda invoke, by reference.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_lambda.py -m bench --benchmark-only \\
        -p no:cacheprovider

A warm LocalLambda environment runs a decorated handler whose 50 MB result is too large for the
response: the decorator stores it in the job and returns a marker; the driver resolves it (a
get that frees it). The peer is the same job's put and get of 50 MB from the driver itself
(over TCP, as inside Lambda: ``POCKET_SHARED_MEMORY=0``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster

pytestmark = [pytest.mark.bench]
MB = 50
ROUNDS = {"rounds": 15, "warmup_rounds": 2, "iterations": 1}
HERE = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    os.environ["POCKET_SHARED_MEMORY"] = "0"
    cluster = LocalCluster({"dram": 1}, node_capacity="512MiB", autoscale=False)
    with cluster, cluster.client() as client:
        j = client.register_job("bench-lambda", JobHints(capacity="256MiB"))
        yield j
        j.deregister()
    del os.environ["POCKET_SHARED_MEMORY"]


@pytest.mark.benchmark(group="50 MB result")
def test_local_put_and_get(benchmark: Any, job: pocketlib.Job) -> None:
    value = os.urandom(MB << 20)

    def move() -> int:
        job.put("direct", value)
        return len(job.get("direct", delete_after_read=True))

    assert benchmark.pedantic(move, **ROUNDS) == MB << 20


@pytest.mark.benchmark(group="50 MB result")
def test_lambda_invoke_by_reference(benchmark: Any, job: pocketlib.Job) -> None:
    env = {"PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    with pls.LocalLambda("lambda_bench_fns.result_of", env=env, memory_mb=1024,
                         timeout_s=60) as fn:  # fmt: skip
        event = {"ticket": job.ticket.to_json(), "mb": MB}
        fn.invoke(event)  # the cold start, and the value made once

        def invoke() -> int:
            out = fn.invoke(event)
            return len(pls.resolve(out.json(), job))

        assert benchmark.pedantic(invoke, **ROUNDS) == MB << 20
