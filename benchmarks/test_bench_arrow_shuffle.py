"""pytest-benchmark: an 8x8 shuffle of 1 GiB of Arrow tables, pocketlib against /dev/shm files.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_arrow_shuffle.py -m bench --benchmark-only \\
        -p no:cacheprovider -s

Eight mapper tables of 128 MiB (4 Mi rows of an int64 key, two float64 and an int64 column)
are split by the same code (:func:`pocketlib.arrow.shuffle.split`: the stable key hash, a
stable argsort and one ``take``) into 8 parts each, then:

- ``pocketlib``: ``shuffle_write`` / ``shuffle_read`` through a job on one DRAM node of a
  LocalCluster on this host (IPC streams written by Arrow into the node's shared memory,
  checksummed, read back zero-copy and checksummed, freed as they are read);
- ``/dev/shm``: one IPC stream file per (mapper, reducer) in a /dev/shm directory, written
  with ``pa.OSFile``, read with ``pa.memory_map`` (zero copy) and unlinked as it is read.

Each reducer concatenates its 8 parts. Both run in this process, mappers then reducers. Each
test's timed rounds alternate with untimed-by-pytest-benchmark rounds of the other system,
timed by hand, so the two are measured side by side; the ratio of the medians (/dev/shm's time
over pocketlib's: above 1, pocketlib is faster) is printed at the end of each test.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
import pocketlib  # noqa: E402
from pocketlib import JobHints, LocalCluster  # noqa: E402
from pocketlib.arrow.shuffle import shuffle_read, shuffle_write, split  # noqa: E402

pytestmark = pytest.mark.bench

M = R = 8
TOTAL = 1 << 30
ROWS = TOTAL // M // 32  # 32 bytes a row
ROUNDS = {"rounds": 7, "warmup_rounds": 1, "iterations": 1}
GROUP = "8x8 shuffle of 1 GiB of Arrow tables"
_round = itertools.count()


@pytest.fixture(scope="module")
def tables() -> list[pa.Table]:
    rng = np.random.default_rng(0)
    return [pa.table({"k": rng.integers(0, 1 << 62, ROWS), "a": rng.random(ROWS),
                      "b": rng.integers(0, 100, ROWS), "c": rng.random(ROWS)})
            for _ in range(M)]  # fmt: skip


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    cluster = LocalCluster({"dram": 1}, node_capacity="3GiB", autoscale=False)
    with cluster, cluster.client() as client:
        j = client.register_job("bench-arrow-shuffle", JobHints(capacity="2GiB"))
        yield j
        j.deregister()


@pytest.fixture(scope="module")
def shm_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="bench-arrow-shuffle-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pocket_shuffle(job: pocketlib.Job, tables: list[pa.Table]) -> int:
    prefix = f"bench/{next(_round)}"
    for m, t in enumerate(tables):
        shuffle_write(job, prefix, m, t, by="k", partitions=R)
    rows = 0
    for r in range(R):
        rows += shuffle_read(job, prefix, r, mappers=M).num_rows
    return rows


def devshm_shuffle(directory: str, tables: list[pa.Table]) -> int:
    prefix = os.path.join(directory, str(next(_round)))
    for m, t in enumerate(tables):
        for r, part in enumerate(split(t, "k", R)):
            with pa.OSFile(f"{prefix}-{r}-{m}", "wb") as f, \
                    pa.ipc.new_stream(f, part.schema) as writer:  # fmt: skip
                writer.write_table(part)
    rows = 0
    for r in range(R):
        parts = []
        for m in range(M):
            path = f"{prefix}-{r}-{m}"
            parts.append(pa.ipc.open_stream(pa.memory_map(path)).read_all())
            os.unlink(path)  # (the mapping keeps the pages while the table lives)
        rows += pa.concat_tables(parts).num_rows
    return rows


def _side_by_side(benchmark: Any, timed: Callable[[], int], other: Callable[[], int],
                  names: tuple[str, str]) -> None:  # fmt: skip
    """``timed`` under pytest-benchmark; before each of its rounds a round of ``other``, timed
    here; the medians and their ratio printed."""
    others: list[float] = []

    def setup() -> None:
        started = time.perf_counter()
        assert other() == M * ROWS
        others.append(time.perf_counter() - started)

    assert benchmark.pedantic(timed, setup=setup, **ROUNDS) == M * ROWS
    mine = benchmark.stats.stats.median
    theirs = statistics.median(others[ROUNDS["warmup_rounds"] :])
    pocket, shm = (mine, theirs) if names[0] == "pocketlib" else (theirs, mine)
    benchmark.extra_info.update({f"{names[1]} median s": theirs, "devshm/pocketlib": shm / pocket})
    print(f"\n{GROUP}: pocketlib {pocket:.3f} s ({TOTAL / pocket / 1e9:.2f} GB/s), "
          f"/dev/shm {shm:.3f} s ({TOTAL / shm / 1e9:.2f} GB/s); "
          f"/dev/shm over pocketlib {shm / pocket:.2f}x")  # fmt: skip


@pytest.mark.benchmark(group=GROUP)
def test_pocketlib(
    benchmark: Any, job: pocketlib.Job, tables: list[pa.Table], shm_dir: str
) -> None:
    _side_by_side(benchmark, lambda: pocket_shuffle(job, tables),
                  lambda: devshm_shuffle(shm_dir, tables), ("pocketlib", "/dev/shm"))  # fmt: skip
    assert list(job.list("bench/")) == []


@pytest.mark.benchmark(group=GROUP)
def test_devshm(benchmark: Any, job: pocketlib.Job, tables: list[pa.Table], shm_dir: str) -> None:
    _side_by_side(benchmark, lambda: devshm_shuffle(shm_dir, tables),
                  lambda: pocket_shuffle(job, tables), ("/dev/shm", "pocketlib"))  # fmt: skip
    assert os.listdir(shm_dir) == []
