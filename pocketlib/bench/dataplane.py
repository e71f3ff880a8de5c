"""Data-plane benchmark: pocketlib next to a real redis-server, in the same run.

Three parts, each measured on both systems in the same process tree and on the same machine:

a. latency of single PUTs and GETs (one client) at 1 KiB, 64 KiB, 1 MiB and 16 MiB. The
   machine is shared and noisy, so the two systems are interleaved: several rounds, and in each
   round every operation runs a batch on one system and then on the other (the order flips
   every round). Samples are pooled per system; p50, p99 and GB/s (size / p50) are reported.
b. aggregate GB/s with 1, 4 and 8 client processes at 1 MiB and 16 MiB: every process waits
   on a barrier, then repeats its operation for a fixed duration and counts bytes; aggregate =
   total bytes / (last process's end - first process's start).
c. the MapReduce sort of pocketlib.workloads.sort with pocketlib and with Redis as the
   shuffle store, each on a freshly started server.

The report (markdown) goes to stdout and to benchmarks/results/dataplane-<date>.md; progress
goes to stderr. GB are 10^9 bytes throughout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import multiprocessing
import os
import platform
import queue as queue_mod
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from redis_server import RedisServer, RedisShuffle, redis_version  # noqa: E402

import pocketlib  # noqa: E402
from pocketlib.cluster import NodeProcess  # noqa: E402
from pocketlib.config import format_size, parse_size  # noqa: E402
from pocketlib.workloads.sort import PocketShuffle, SortResult, run_sort  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
LATENCY_SIZES = (1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB)
GET_INTO_SIZES = (1 * MiB, 16 * MiB)
AGG_SIZES = (1 * MiB, 16 * MiB)
AGG_CLIENTS = (1, 4, 8)
SYSTEMS = ("pocket", "redis")
JOB = "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def size_label(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return format_size(n)


# -- settings ------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    rounds: int
    agg_rounds: int
    duration: float
    sort_size: int
    sort_runs: int
    mappers: int
    reducers: int
    capacity: int
    parts: str
    out: Path | None

    def ops_per_round(self, size: int) -> int:
        """Operations of one batch: about the same bytes per batch at large sizes."""
        if self.quick:
            table = {1 * KiB: 200, 64 * KiB: 100, 1 * MiB: 30, 16 * MiB: 4}
        else:
            table = {1 * KiB: 1000, 64 * KiB: 400, 1 * MiB: 150, 16 * MiB: 24}
        return table.get(size, 50)


def parse_args(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer ops, 64MiB sort")
    p.add_argument("--rounds", type=int, help="latency rounds (default 6, quick 2)")
    p.add_argument("--agg-rounds", type=int, help="rounds per aggregate case (default 2, quick 1)")
    p.add_argument("--duration", type=float, help="seconds per aggregate run (default 3, quick 1)")
    p.add_argument("--sort-size", help="bytes to sort (default 1GiB, quick 64MiB)")
    p.add_argument("--sort-runs", type=int, help="sorts per system (default 3, quick 1)")
    p.add_argument("--mappers", type=int, default=8)
    p.add_argument("--reducers", type=int, default=8)
    p.add_argument("--capacity", default="4GiB", help="pocket node capacity (default 4GiB)")
    p.add_argument(
        "--parts", default="abc", help="which parts to run: any of a, b, c (default abc)"
    )
    p.add_argument("--out", type=Path, help="report path (default benchmarks/results/...)")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    sort_size = parse_size(a.sort_size) if a.sort_size else (64 * MiB if quick else 1 * GiB)
    return Settings(
        quick=quick,
        rounds=a.rounds or (2 if quick else 6),
        agg_rounds=a.agg_rounds or (1 if quick else 2),
        duration=a.duration or (1.0 if quick else 3.0),
        sort_size=sort_size,
        sort_runs=max(1, a.sort_runs or (1 if quick else 3)),
        mappers=a.mappers,
        reducers=a.reducers,
        capacity=max(parse_size(a.capacity), 3 * sort_size),
        parts=a.parts,
        out=a.out,
    )


# -- machine -------------------------------------------------------------------------------


def machine_info() -> list[tuple[str, str]]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import hiredis
    import redis

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = format_size(int(line.split()[1]) * 1024)
    except OSError:
        pass
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "pocketlib")
    return [
        ("date", dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("nproc", str(ncpu)),
        ("CPU", model),
        ("memory", mem),
        ("kernel", platform.release()),
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("redis-server", redis_version()),
        ("redis-py / hiredis", f"{redis.__version__} / {hiredis.__version__}"),
        ("pocketlib", f"{pocketlib.__version__} at {commit}"
                      + (" (pocketlib/ has uncommitted changes)" if dirty else "")),
    ]  # fmt: skip


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else ("unknown" if args[0] != "status" else "")


def command_line(argv: list[str]) -> str:
    return os.environ.get("POCKET_BENCH_COMMAND") or shlex.join(
        ["python", "benchmarks/dataplane.py", *argv]
    )


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


def _timed(fn: Callable[[], Any], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    append = out.append
    for _ in range(n):
        t = clock()
        fn()
        append(clock() - t)


def bench_latency(s: Settings, job: Any, r: Any) -> dict[tuple[str, str, int], LatencySeries]:
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
                        sr = series.setdefault(
                            (system, op, size), LatencySeries(system, op, size)
                        )
                        _timed(fn, warm, [])
                        _timed(fn, n, sr.ns)
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
        if system == "pocket":
            job = pocketlib.connect([address], job=JOB)
            put = functools.partial(job.put, key, value)
            get: Callable[[], Any] = functools.partial(job.get, key)
        else:
            import redis

            host, port = address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), socket_timeout=60)
            put = functools.partial(client.set, key, value)
            get = functools.partial(client.get, key)
        put()
        fn = put if op == "PUT" else get
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
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
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
    out: list[SortResult] = []
    for i in range(s.sort_runs):
        order = SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]
        for system in order:
            log(f"sort {size_label(s.sort_size)} through {system} "
                f"({s.mappers} mappers, {s.reducers} reducers)")  # fmt: skip
            if system == "pocket":
                with NodeProcess("dram", s.capacity) as node:
                    store: Any = PocketShuffle([str(node.address)], job="bench-sort")
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


# -- report --------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":--" if c == "l" else "--:" for c in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _us(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


@dataclass
class Target:
    text: str
    value: float
    limit: float
    higher_is_better: bool
    detail: str

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


def render(
    s: Settings,
    argv: list[str],
    machine: list[tuple[str, str]],
    lat: dict[tuple[str, str, int], LatencySeries],
    agg: dict[tuple[str, str, int, int], AggResult],
    sorts: list[SortResult],
    elapsed: float,
) -> tuple[str, list[Target]]:
    out: list[str] = ["# pocketlib vs Redis: data-plane benchmark", ""]
    out += ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine]
    out += ["", "Command:", "", "```", command_line(argv), "```", ""]
    mode = "quick (smoke run)" if s.quick else "full"
    out += [f"Mode: {mode}. pocketlib: one `dram` node (`pocketlib.cluster.NodeProcess`, "
            f"capacity {size_label(s.capacity)}), client `pocketlib.connect`. Redis: "
            "`redis-server` (`--save '' --appendonly no`), client redis-py with the hiredis "
            "parser. Both on 127.0.0.1. GB = 10^9 bytes.", ""]  # fmt: skip
    targets: list[Target] = []

    if lat:
        out += ["## a. Latency, one client", ""]
        ns = {k[2]: len(v.ns) for k, v in lat.items() if k[0] == "pocket"}
        out += [f"{s.rounds} interleaved rounds (pocket and Redis alternate, order flipped "
                "every round); samples pooled per system: "
                + ", ".join(f"{size_label(k)}: {v}" for k, v in sorted(ns.items()))
                + " per operation and system. Latency in microseconds; GB/s = size / p50. "
                "`GET (get_into)` reads into a preallocated buffer and is compared with "
                "Redis's plain GET.", ""]  # fmt: skip
        header = [
            "op", "size", "pocket p50 µs", "redis p50 µs", "pocket p99 µs", "redis p99 µs",
            "pocket GB/s", "redis GB/s", "latency ratio pocket/redis p50 (lower is better)",
            "latency ratio pocket/redis p99 (lower is better)",
            "throughput ratio pocket/redis (higher is better)",
        ]  # fmt: skip
        rows = []
        for op in ("PUT", "GET", "GET (get_into)"):
            for size in LATENCY_SIZES:
                p = lat.get(("pocket", op, size))
                rd = lat.get(("redis", "GET" if op.startswith("GET") else op, size))
                if p is None or rd is None:
                    continue
                rows.append([
                    op, size_label(size), _us(p.pct(50)), _us(rd.pct(50)), _us(p.pct(99)),
                    _us(rd.pct(99)), f"{p.gbps:.3f}", f"{rd.gbps:.3f}",
                    f"{_ratio(p.pct(50), rd.pct(50)):.2f}x",
                    f"{_ratio(p.pct(99), rd.pct(99)):.2f}x", f"{_ratio(p.gbps, rd.gbps):.2f}x",
                ])  # fmt: skip
        out += [*_table(header, rows, "ll" + "r" * (len(header) - 2)), ""]
        for op in ("GET", "PUT"):
            p, rd = lat[("pocket", op, 1 * KiB)], lat[("redis", op, 1 * KiB)]
            targets.append(Target(
                f"1 KiB {op} p50: pocket <= 0.6x Redis", _ratio(p.pct(50), rd.pct(50)), 0.6,
                False, f"{_us(p.pct(50))} µs vs {_us(rd.pct(50))} µs",
            ))  # fmt: skip
        for op in ("GET", "PUT"):
            p, rd = lat[("pocket", op, 16 * MiB)], lat[("redis", op, 16 * MiB)]
            targets.append(Target(
                f"16 MiB {op}, one client: pocket >= 2x Redis's GB/s", _ratio(p.gbps, rd.gbps),
                2.0, True, f"{p.gbps:.2f} GB/s vs {rd.gbps:.2f} GB/s",
            ))  # fmt: skip

    if agg:
        out += ["## b. Aggregate throughput, client processes", ""]
        out += [f"Each client is a process; after a barrier each repeats its operation on its "
                f"own key for {s.duration:g} s and counts bytes. Aggregate GB/s = total bytes "
                "/ (last end - first start). "
                f"{s.agg_rounds} round(s) per configuration, pocket and Redis alternating; "
                "bytes and seconds pooled over rounds.", ""]  # fmt: skip
        header = [
            "op", "size", "clients", "pocket GB/s", "redis GB/s", "pocket ops/s",
            "redis ops/s", "throughput ratio pocket/redis (higher is better)",
        ]
        rows = []
        for op in ("GET", "PUT"):
            for size in AGG_SIZES:
                for c in AGG_CLIENTS:
                    p, rd = agg[("pocket", op, size, c)], agg[("redis", op, size, c)]
                    rows.append([
                        op, size_label(size), str(c), f"{p.gbps:.2f}", f"{rd.gbps:.2f}",
                        f"{p.ops / p.seconds:,.0f}", f"{rd.ops / rd.seconds:,.0f}",
                        f"{_ratio(p.gbps, rd.gbps):.2f}x",
                    ])  # fmt: skip
        out += [*_table(header, rows, "llr" + "r" * (len(header) - 3)), ""]
        for op in ("GET", "PUT"):
            p, rd = agg[("pocket", op, 1 * MiB, 8)], agg[("redis", op, 1 * MiB, 8)]
            targets.append(Target(
                f"8 client processes, 1 MiB {op}: pocket >= 1.3x Redis's aggregate GB/s",
                _ratio(p.gbps, rd.gbps), 1.3, True, f"{p.gbps:.2f} GB/s vs {rd.gbps:.2f} GB/s",
            ))  # fmt: skip

    if sorts:
        out += [f"## c. MapReduce sort, {size_label(s.sort_size)}", ""]
        out += [f"`run_sort` from `pocketlib.workloads.sort`: {s.mappers} mapper processes, "
                f"{s.reducers} reducer processes, each store on a freshly started server. "
                "Shuffle GB/s = intermediate bytes written and read / store I/O time on each "
                "phase's critical path (the slowest mapper's put time + the slowest reducer's "
                "take time). Redis: put = SET, take = GETDEL; peak = `used_memory_peak`. "
                "pocketlib: take = GET with delete-after-read; peak = the tier's `peak_used`. "
                f"{s.sort_runs} run(s) per store, alternating which store goes first; the "
                "ratios compare the medians.", ""]  # fmt: skip
        header = [
            "store", "seconds", "map s", "reduce s", "shuffle bytes", "store I/O s",
            "shuffle GB/s", "peak bytes", "verified",
        ]
        rows = [
            [
                r.store, f"{r.seconds:.2f}", f"{r.map_seconds:.2f}", f"{r.reduce_seconds:.2f}",
                format_size(r.shuffle_bytes), f"{r.shuffle_seconds:.2f}",
                f"{r.shuffle_gbps:.2f}",
                format_size(r.peak_bytes) if r.peak_bytes is not None else "n/a",
                "yes" if r.verified else "NO: " + "; ".join(r.problems),
            ]
            for r in sorts
        ]
        out += [*_table(header, rows, "lrrrrrrrl"), ""]
        ps = [r for r in sorts if r.store == "pocketlib"]
        rs = [r for r in sorts if r.store == "redis"]
        p_gbps = float(np.median([r.shuffle_gbps for r in ps]))
        r_gbps = float(np.median([r.shuffle_gbps for r in rs]))
        p_sec = float(np.median([r.seconds for r in ps]))
        r_sec = float(np.median([r.seconds for r in rs]))
        g_ratio, t_ratio = _ratio(p_gbps, r_gbps), _ratio(p_sec, r_sec)
        out += [f"- shuffle GB/s ratio pocket/redis (higher is better): {g_ratio:.2f}x",
                f"- end-to-end time ratio pocket/redis (lower is better): {t_ratio:.2f}x",
                ""]  # fmt: skip
        label = size_label(s.sort_size)
        note = "" if s.sort_size == GiB else f" (run at {label}; the target is set for 1 GiB)"
        targets.append(Target(
            f"{label} sort: shuffle GB/s >= 1.5x Redis's{note}", g_ratio, 1.5, True,
            f"{p_gbps:.2f} GB/s vs {r_gbps:.2f} GB/s",
        ))  # fmt: skip
        targets.append(Target(
            f"{label} sort: end-to-end time <= 0.9x Redis's{note}", t_ratio, 0.9, False,
            f"{p_sec:.2f} s vs {r_sec:.2f} s",
        ))  # fmt: skip

    out += ["## Targets", ""]
    for t in targets:
        want = f">= {t.limit:g}x" if t.higher_is_better else f"<= {t.limit:g}x"
        verdict = "PASS" if t.passed else "MISS"
        out.append(f"- {verdict}: {t.text}: {t.value:.3f}x (want {want}; {t.detail})")
    passed = sum(t.passed for t in targets)
    out += ["", f"{passed} of {len(targets)} targets met.", ""]
    out += [f"Total benchmark runtime: {elapsed:.0f} s.", ""]
    return "\n".join(out), targets


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    s = parse_args(argv)
    t0 = time.perf_counter()
    machine = machine_info()
    lat: dict[tuple[str, str, int], LatencySeries] = {}
    agg: dict[tuple[str, str, int, int], AggResult] = {}
    sorts: list[SortResult] = []
    if "a" in s.parts or "b" in s.parts:
        with NodeProcess("dram", s.capacity) as node, RedisServer() as server:
            log(f"pocket node at {node.address} (pid {node.pid}), "
                f"redis-server at {server.address} (pid {server.pid})")  # fmt: skip
            if "a" in s.parts:
                job = pocketlib.connect([str(node.address)], job=JOB)
                r = server.client(socket_timeout=60)
                try:
                    lat = bench_latency(s, job, r)
                finally:
                    job.close()
                    r.close()
            if "b" in s.parts:
                agg = bench_aggregate(
                    s, {"pocket": str(node.address), "redis": server.address}
                )
    if "c" in s.parts:
        sorts = bench_sort(s)
    elapsed = time.perf_counter() - t0
    report, _ = render(s, argv, machine, lat, agg, sorts, elapsed)
    print(report)
    path = s.out
    if path is None:
        suffix = "-quick" if s.quick else ""
        path = HERE / "results" / f"dataplane-{dt.date.today().isoformat()}{suffix}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    log(f"report written to {path}")
    return 0 if all(r.verified for r in sorts) else 1


if __name__ == "__main__":
    sys.exit(main())
