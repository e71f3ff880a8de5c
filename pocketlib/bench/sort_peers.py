"""A serverless sort through pocketlib's executor and shuffle, against the same program on
Lithops (localhost compute) with Lithops' Redis storage backend, side by side in one run.

    python -m pocketlib.bench.sort_peers --size 1GiB --mappers 8 --reducers 8 --workers 2

Both programs: M mappers each generate records (100 bytes, 10-byte random keys), partition
them by key range into R parts and store each part; R reducers each read their M parts, sort
them and check them. pocketlib: ``FunctionExecutor`` on local processes, a job on a
LocalCluster, ``ShuffleWriter`` / ``ShuffleReader`` (reducers start with the mappers and wait
on the nodes). Lithops: ``lithops.FunctionExecutor`` on localhost, ``storage='redis'`` (a
redis-server this run starts), mappers' ``put_object`` and reducers' ``get_object`` after the
map stage. Each function times its store calls; the shuffle throughput is the bytes written
and read over the store time divided by the functions running at once.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import format_size, parse_size

RECORD, KEY = 100, 10


@dataclass
class Outcome:
    system: str
    seconds: float
    store_seconds: float
    moved: int
    records: int
    key_sum: int

    def gbps(self, workers: int) -> float:
        return self.moved / (self.store_seconds / workers) / 1e9


def _generate(m: int, n: int, reducers: int) -> list[Any]:
    """Mapper m's records, partitioned by the top bits of the key; the parts."""
    import numpy as np

    rng = np.random.default_rng([7, m])
    records = np.empty((n, RECORD), dtype=np.uint8)
    records[:, :KEY] = rng.integers(0, 256, size=(n, KEY), dtype=np.uint8)
    records[:, KEY:] = m & 0xFF
    top = records[:, 0].astype(np.int64) * 256 + records[:, 1]
    part = top * reducers // 65536
    order = np.argsort(part, kind="stable")
    shuffled = records[order]
    bounds = np.searchsorted(part[order], np.arange(reducers + 1))
    return [shuffled[bounds[r] : bounds[r + 1]] for r in range(reducers)]


def _check(parts: list[bytes], r: int, reducers: int) -> tuple[int, int]:
    """Sort reducer r's records; (count, key sum); AssertionError if out of order or range."""
    import numpy as np

    data = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, RECORD)
    keys = data[:, :KEY].copy().view(f"S{KEY}").ravel()
    ordered = data[np.argsort(keys, kind="stable")]
    top = ordered[:, 0].astype(np.int64) * 256 + ordered[:, 1]
    assert (top * reducers // 65536 == r).all(), "a record in the wrong partition"
    sorted_keys = ordered[:, :KEY].copy().view(f"S{KEY}").ravel()
    assert (sorted_keys[1:] >= sorted_keys[:-1]).all(), "not sorted"
    return len(ordered), int(ordered[:, :KEY].astype(np.int64).sum())


# -- pocketlib ------------------------------------------------------------------------------------


def _pocket_map(m: int, n: int, reducers: int, job: Any) -> float:
    from ..serverless import ShuffleWriter

    parts = _generate(m, n, reducers)
    started = time.perf_counter()
    with ShuffleWriter(job, "sort", m, reducers) as out:
        for r, part in enumerate(parts):
            out.write(r, part.reshape(-1).data)
    return time.perf_counter() - started


def _pocket_reduce(r: int, mappers: int, reducers: int, job: Any) -> tuple[float, int, int, int]:
    from ..serverless import ShuffleReader

    reader = ShuffleReader(job, "sort", r, mappers)
    job.wait_for(reader.keys, timeout=600)  # (waiting for mappers is not store time)
    started = time.perf_counter()
    parts = reader.read(timeout=600)
    took = time.perf_counter() - started
    count, key_sum = _check(parts, r, reducers)
    return took, sum(len(p) for p in parts), count, key_sum


@contextlib.contextmanager
def _pocket_executor(size: int, workers: int) -> Iterator[Any]:
    """A one-node LocalCluster, a job sized for a sort of ``size`` bytes, and an executor over
    it (the job is deregistered after)."""
    from .. import serverless as pls
    from ..config import JobHints
    from ..control.cluster import LocalCluster

    cluster = LocalCluster({"dram": 1}, node_capacity=int(size * 1.6), autoscale=False)
    with cluster, cluster.client() as client:
        job = client.register_job("sort", JobHints(capacity=int(size * 1.3),
                                                   max_concurrency=workers))  # fmt: skip
        try:
            with pls.FunctionExecutor(job=job, workers=workers) as fexec:
                yield fexec
        finally:
            job.deregister()


def run_pocket(size: int, mappers: int, reducers: int, workers: int) -> Outcome:
    n = size // RECORD // mappers
    with _pocket_executor(size, workers) as fexec:
        started = time.perf_counter()
        maps = fexec.map(_pocket_map, [(m, n, reducers) for m in range(mappers)])
        reduces = fexec.map(_pocket_reduce, [(r, mappers, reducers) for r in range(reducers)])
        map_io = sum(fexec.get_result(maps))
        out = fexec.get_result(reduces)
        seconds = time.perf_counter() - started
    read = sum(o[1] for o in out)
    return Outcome("pocketlib", seconds, map_io + sum(o[0] for o in out), 2 * read,
                   sum(o[2] for o in out), sum(o[3] for o in out))  # fmt: skip


def _raw_map(m: int, n: int, reducers: int) -> list[memoryview]:
    return [part.reshape(-1).data for part in _generate(m, n, reducers)]


def run_pocket_msr(size: int, mappers: int, reducers: int, workers: int) -> float:
    """The same sort through ``map_shuffle_reduce(raw=True)``: its end-to-end seconds."""
    n = size // RECORD // mappers
    with _pocket_executor(size, workers) as fexec:
        started = time.perf_counter()
        futures = fexec.map_shuffle_reduce(
            _raw_map, [(m, n, reducers) for m in range(mappers)], _RawReducer(reducers),
            reducers=reducers, raw=True, timeout=600,
        )  # fmt: skip
        counts = fexec.get_result(futures)
        seconds = time.perf_counter() - started
    assert sum(c[0] for c in counts) == n * mappers
    return seconds


class _RawReducer:
    """reduce_func for map_shuffle_reduce: it is not told its partition, so it learns it from
    the keys (every record of a partition shares the top bits that chose it)."""

    def __init__(self, reducers: int) -> None:
        self.reducers = reducers

    def __call__(self, parts: list[bytes]) -> tuple[int, int]:
        data = next((p for p in parts if p), b"")
        r = (data[0] * 256 + data[1]) * self.reducers // 65536 if data else 0
        return _check(parts, r, self.reducers)


# -- Lithops with Redis ---------------------------------------------------------------------------


def _lithops_map(m: int, n: int, reducers: int, storage: Any) -> float:
    parts = _generate(m, n, reducers)
    started = time.perf_counter()
    for r, part in enumerate(parts):
        storage.put_object(storage.bucket, f"sort/r{r}/m{m}", part.tobytes())
    return time.perf_counter() - started


def _lithops_reduce(r: int, mappers: int, reducers: int, storage: Any
                    ) -> tuple[float, int, int, int]:  # fmt: skip
    started = time.perf_counter()
    parts = [storage.get_object(storage.bucket, f"sort/r{r}/m{m}") for m in range(mappers)]
    storage.delete_objects(storage.bucket, [f"sort/r{r}/m{m}" for m in range(mappers)])
    took = time.perf_counter() - started
    count, key_sum = _check(parts, r, reducers)
    return took, sum(len(p) for p in parts), count, key_sum


def run_lithops_redis(size: int, mappers: int, reducers: int, workers: int) -> Outcome:
    import lithops

    from .redis_peer import RedisServer

    n = size // RECORD // mappers
    with RedisServer() as redis:
        config = {
            "lithops": {"backend": "localhost", "storage": "redis", "log_level": "WARNING"},
            "localhost": {"runtime": sys.executable, "worker_processes": workers},
            "redis": {"host": "127.0.0.1", "port": redis.port},
        }
        started = time.perf_counter()
        fexec = lithops.FunctionExecutor(config=config)
        fexec.map(_lithops_map, [(m, n, reducers) for m in range(mappers)])
        map_io = sum(fexec.get_result())
        fexec.map(_lithops_reduce, [(r, mappers, reducers) for r in range(reducers)])
        out = fexec.get_result()
        fexec.clean()
        seconds = time.perf_counter() - started
    read = sum(o[1] for o in out)
    return Outcome("lithops+redis", seconds, map_io + sum(o[0] for o in out), 2 * read,
                   sum(o[2] for o in out), sum(o[3] for o in out))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--mappers", type=int, default=8)
    parser.add_argument("--reducers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    print(f"sort of {format_size(size)}, {args.mappers} mappers x {args.reducers} reducers, "
          f"{args.workers} functions at once")  # fmt: skip
    rows: list[tuple[Outcome, Outcome]] = []
    for _ in range(args.runs):
        pocket = run_pocket(size, args.mappers, args.reducers, args.workers)
        peer = run_lithops_redis(size, args.mappers, args.reducers, args.workers)
        assert (pocket.records, pocket.key_sum) == (peer.records, peer.key_sum), "outputs differ"
        msr = run_pocket_msr(size, args.mappers, args.reducers, args.workers)
        rows.append((pocket, peer))
        for o in (pocket, peer):
            print(
                f"  {o.system:14} end to end {o.seconds:7.2f} s   shuffle "
                f"{o.gbps(args.workers):6.2f} GB/s   ({format_size(o.moved)} moved, "
                f"{o.store_seconds:.2f} s in store calls, {o.records} records sorted)"
            )
        print(f"  pocketlib through map_shuffle_reduce(raw=True): end to end {msr:.2f} s")
        print(f"  ratios: shuffle {pocket.gbps(args.workers) / peer.gbps(args.workers):.2f}x, "
              f"end to end {pocket.seconds / peer.seconds:.2f}x "
              f"(map_shuffle_reduce: {msr / peer.seconds:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
