"""The measurement loops of ``pocket bench``: latency (a), aggregate throughput (b), sort (c).

Each part runs both systems in the same process tree, alternating which goes first, because the
machine is shared and noisy. Progress goes to stderr.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue as queue_mod
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..client.client import Job, connect
from ..control.processes import NodeProcess
from ..workloads.sort import PocketShuffle, ShuffleStore, SortResult, run_sort
from .redis_peer import RedisServer, RedisShuffle
from .settings import (
    AGG_CLIENTS,
    AGG_SIZES,
    GET_INTO_SIZES,
    JOB,
    LATENCY_SIZES,
    SYSTEMS,
    Settings,
    size_label,
)

__all__ = [
    "AggResult",
    "LatencySeries",
    "bench_aggregate",
    "bench_latency",
    "bench_sort",
    "log",
    "run_aggregate",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- a. latency ----------------------------------------------------------------------------


@dataclass
class LatencySeries:
    system: str
    op: str
    size: int
    ns: list[int] = field(default_factory=list)

    def pct(self, q: float) -> float:
        """Percentile ``q`` in microseconds."""
        return float(np.percentile(np.asarray(self.ns, dtype=np.float64), q)) / 1e3

    @property
    def gbps(self) -> float:
        """size / p50, in GB/s."""
        p50 = self.pct(50)
        return self.size / (p50 * 1e3) if p50 else 0.0


def timed(fn: Callable[[], Any], n: int, out: list[int]) -> None:
    """Call ``fn`` ``n`` times, appending each call's nanoseconds to ``out``."""
    clock = time.perf_counter_ns
    append = out.append
    for _ in range(n):
        t = clock()
        fn()
        append(clock() - t)


def bench_latency(s: Settings, job: Job, r: Any) -> dict[tuple[str, str, int], LatencySeries]:
    """Part a: single PUTs and GETs, pocket (``job``) and Redis (redis-py client ``r``)."""
    series: dict[tuple[str, str, int], LatencySeries] = {}
    for size in LATENCY_SIZES:
        value = os.urandom(size)
        k_get, k_put = f"lat/{size}/get", f"lat/{size}/put"
        job.put(k_get, value)
        r.set(k_get, value)
        if job.get(k_get) != value or r.get(k_get) != value:
            raise RuntimeError(f"read-back mismatch at {size} bytes")
        buf = bytearray(size)
        ops: dict[str, list[tuple[str, Callable[[], Any]]]] = {
            "pocket": [
                ("PUT", functools.partial(job.put, k_put, value)),
                ("GET", functools.partial(job.get, k_get)),
            ],
            "redis": [
                ("PUT", functools.partial(r.set, k_put, value)),
                ("GET", functools.partial(r.get, k_get)),
            ],
        }
        if size in GET_INTO_SIZES:
            ops["pocket"].append(("GET (get_into)", functools.partial(job.get_into, k_get, buf)))
        n = s.ops_per_round(size)
        warm = max(2, n // 10)
        log(f"latency {size_label(size)}: {s.rounds} rounds x {n} ops per op and system")
        for rnd in range(s.rounds):
            order = SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]
            for op in ("PUT", "GET", "GET (get_into)"):
                for system in order:
                    for name, fn in ops[system]:
                        if name != op:
                            continue
                        sr = series.setdefault((system, op, size), LatencySeries(system, op, size))
                        timed(fn, warm, [])
                        timed(fn, n, sr.ns)
        job.delete(k_get)
        job.delete(k_put)
        r.delete(k_get, k_put)
    return series


# -- b. aggregate throughput ---------------------------------------------------------------


@dataclass
class AggResult:
    system: str
    op: str
    size: int
    clients: int
    bytes: int = 0
    ops: int = 0
    seconds: float = 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds else 0.0


def _agg_worker(
    system: str, address: str, op: str, size: int, duration: float, idx: int,
    barrier: Any, results: Any,
) -> None:  # fmt: skip
    try:
        value = os.urandom(size)
        key = f"agg/{idx}"
        put: Callable[[], Any]
        get: Callable[[], Any]
        if system == "pocket":
            job = connect([address], job=JOB)
            put = functools.partial(job.put, key, value)
            get = functools.partial(job.get, key)
        else:
            import redis

            host, port = address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), socket_timeout=60)
            put = functools.partial(client.set, key, value)
            get = functools.partial(client.get, key)
        put()
        fn: Callable[[], Any] = put if op == "PUT" else get
        if op == "GET" and len(fn()) != size:
            raise RuntimeError("GET returned the wrong size")
        fn()
        barrier.wait(timeout=120)
        clock = time.perf_counter
        start = clock()
        deadline = start + duration
        n = 0
        while True:
            fn()
            n += 1
            end = clock()
            if end >= deadline:
                break
        results.put((idx, n, start, end, None))
    except BaseException as exc:
        barrier.abort()
        results.put((idx, 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def run_aggregate(
    system: str, address: str, op: str, size: int, clients: int, duration: float
) -> AggResult:
    """``clients`` forked processes repeating ``op`` on one system for ``duration`` seconds."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    results: multiprocessing.Queue[tuple[int, int, float, float, str | None]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_agg_worker,
            args=(system, address, op, size, duration, i, barrier, results),
            daemon=True,
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    got: list[tuple[int, int, float, float, str | None]] = []
    try:
        for _ in procs:
            got.append(results.get(timeout=duration + 180))
    except queue_mod.Empty:
        raise RuntimeError(f"aggregate {system} {op} {size} x{clients}: a worker hung") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [e for *_, e in got if e]
    if errors:
        raise RuntimeError(f"aggregate {system} {op} {size} x{clients}: {errors[0]}")
    n_ops = sum(g[1] for g in got)
    window = max(g[3] for g in got) - min(g[2] for g in got)
    return AggResult(system, op, size, clients, n_ops * size, n_ops, window)


def bench_aggregate(
    s: Settings, addresses: dict[str, str]
) -> dict[tuple[str, str, int, int], AggResult]:
    """Part b: every (clients, size, op) case on both systems, pooled over the rounds."""
    pooled: dict[tuple[str, str, int, int], AggResult] = {}
    flip = 0
    for clients in AGG_CLIENTS:
        for size in AGG_SIZES:
            for op in ("GET", "PUT"):
                log(f"aggregate {op} {size_label(size)} x{clients} processes, "
                    f"{s.agg_rounds} round(s) of {s.duration:g} s per system")  # fmt: skip
                for _ in range(s.agg_rounds):
                    order = SYSTEMS if flip % 2 == 0 else SYSTEMS[::-1]
                    flip += 1
                    for system in order:
                        res = run_aggregate(system, addresses[system], op, size, clients,
                                            s.duration)  # fmt: skip
                        acc = pooled.setdefault(
                            (system, op, size, clients), AggResult(system, op, size, clients)
                        )
                        acc.bytes += res.bytes
                        acc.ops += res.ops
                        acc.seconds += res.seconds
    return pooled


# -- c. sort -------------------------------------------------------------------------------


def bench_sort(s: Settings) -> list[SortResult]:
    """Part c: the MapReduce sort through each store, each on a freshly started server."""
    out: list[SortResult] = []
    for i in range(s.sort_runs):
        order = SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]
        for system in order:
            log(f"sort {size_label(s.sort_size)} through {system} "
                f"({s.mappers} mappers, {s.reducers} reducers)")  # fmt: skip
            store: ShuffleStore
            if system == "pocket":
                with NodeProcess("dram", s.capacity) as node:
                    store = PocketShuffle([str(node.address)], job="bench-sort")
                    try:
                        res = run_sort(store, s.sort_size, s.mappers, s.reducers)
                    finally:
                        store.cleanup()
            else:
                with RedisServer() as server:
                    store = RedisShuffle(server.host, server.port)
                    try:
                        res = run_sort(store, s.sort_size, s.mappers, s.reducers)
                    finally:
                        store.cleanup()
            log(f"  {res.seconds:.2f} s, shuffle {res.shuffle_gbps:.2f} GB/s, "
                f"verified={res.verified}")  # fmt: skip
            out.append(res)
    return out
