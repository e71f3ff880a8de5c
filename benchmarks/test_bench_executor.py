"""pytest-benchmark: the executor's ``map`` against ``concurrent.futures.ProcessPoolExecutor``.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_executor.py -m bench --benchmark-only \\
        -p no:cacheprovider

1,000 calls of a function that does nothing, on two worker processes each, started once per
benchmark; the executor has a job (so it checks every argument and result for references).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from typing import Any

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster

pytestmark = [pytest.mark.bench]
CALLS = 1000
ROUNDS = {"rounds": 10, "warmup_rounds": 1, "iterations": 1}


def noop(i: int) -> int:
    return i


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    cluster = LocalCluster({"dram": 1}, node_capacity="64MiB", autoscale=False)
    with cluster, cluster.client() as client:
        j = client.register_job("bench-exec", JobHints(capacity="8MiB"))
        yield j
        j.deregister()


@pytest.mark.benchmark(group="map of 1,000 no-op calls, 2 processes")
def test_process_pool_executor(benchmark: Any) -> None:
    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        result = benchmark.pedantic(lambda: list(pool.map(noop, range(CALLS))), **ROUNDS)
    assert result == list(range(CALLS))


@pytest.mark.benchmark(group="map of 1,000 no-op calls, 2 processes")
def test_function_executor(benchmark: Any, job: pocketlib.Job) -> None:
    with pls.FunctionExecutor(job=job, workers=2) as fexec:
        run = lambda: fexec.get_result(fexec.map(noop, range(CALLS)))  # noqa: E731
        result = benchmark.pedantic(run, **ROUNDS)
    assert result == list(range(CALLS))
