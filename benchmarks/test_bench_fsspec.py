"""pytest-benchmark: small reads through ``pocket://``: 1,000 ranges of 4 KiB from one object.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_fsspec.py -m bench --benchmark-only \\
        -p no:cacheprovider

``cat_ranges`` sends the ranges of one key in one GET_RANGES request (answered in one frame); the
peer is the same 1,000 ranges read by 1,000 single ``cat_file`` calls, each a round trip of its
own. The target is a tenth of their time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest

from pocketlib import JobHints, LocalCluster

pytestmark = [pytest.mark.bench]
N, SIZE = 1000, 4096
ROUNDS = {"rounds": 10, "warmup_rounds": 1, "iterations": 1}


@pytest.fixture(scope="module")
def fs() -> Iterator[Any]:
    cluster = LocalCluster({"dram": 1}, node_capacity="256MiB", autoscale=False)
    with cluster, cluster.client() as client:
        job = client.register_job("bench-fs", JobHints(capacity="64MiB"))
        f = fsspec.filesystem("pocket", ticket=job.ticket.to_json())
        f.pipe("bench-fs/blob", os.urandom(16 << 20))
        yield f
        job.deregister()


STARTS = [(i * 7919 * SIZE) % ((16 << 20) - SIZE) for i in range(N)]


@pytest.mark.benchmark(group="1,000 reads of 4 KiB from one object")
def test_cat_file_one_by_one(benchmark: Any, fs: Any) -> None:
    run = lambda: [fs.cat_file("bench-fs/blob", s, s + SIZE) for s in STARTS]  # noqa: E731
    assert len(benchmark.pedantic(run, **ROUNDS)) == N


@pytest.mark.benchmark(group="1,000 reads of 4 KiB from one object")
def test_cat_ranges(benchmark: Any, fs: Any) -> None:
    ends = [s + SIZE for s in STARTS]
    run = lambda: fs.cat_ranges(["bench-fs/blob"] * N, STARTS, ends)  # noqa: E731
    assert all(len(x) == SIZE for x in benchmark.pedantic(run, **ROUNDS))
