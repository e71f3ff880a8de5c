"""The markdown report of ``pocket bench`` and its target checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import format_size
from ..workloads.sort import SortResult
from .measure import AggResult, LatencySeries
from .settings import AGG_CLIENTS, AGG_SIZES, LATENCY_SIZES, GiB, KiB, MiB, Settings, size_label

__all__ = ["Target", "render"]


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


def _latency(
    s: Settings, lat: dict[tuple[str, str, int], LatencySeries], targets: list[Target]
) -> list[str]:
    out = ["## a. Latency, one client", ""]
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
        pl, rl = lat[("pocket", op, 1 * KiB)], lat[("redis", op, 1 * KiB)]
        targets.append(Target(
            f"1 KiB {op} p50: pocket <= 0.6x Redis", _ratio(pl.pct(50), rl.pct(50)), 0.6,
            False, f"{_us(pl.pct(50))} µs vs {_us(rl.pct(50))} µs",
        ))  # fmt: skip
    for op in ("GET", "PUT"):
        pl, rl = lat[("pocket", op, 16 * MiB)], lat[("redis", op, 16 * MiB)]
        targets.append(Target(
            f"16 MiB {op}, one client: pocket >= 2x Redis's GB/s", _ratio(pl.gbps, rl.gbps),
            2.0, True, f"{pl.gbps:.2f} GB/s vs {rl.gbps:.2f} GB/s",
        ))  # fmt: skip
    return out


def _aggregate(
    s: Settings, agg: dict[tuple[str, str, int, int], AggResult], targets: list[Target]
) -> list[str]:
    out = ["## b. Aggregate throughput, client processes", ""]
    out += [f"Each client is a process; after a barrier each repeats its operation on its "
            f"own key for {s.duration:g} s and counts bytes. Aggregate GB/s = total bytes "
            "/ (last end - first start). "
            f"{s.agg_rounds} round(s) per configuration, pocket and Redis alternating; "
            "bytes and seconds pooled over rounds.", ""]  # fmt: skip
    header = [
        "op", "size", "clients", "pocket GB/s", "redis GB/s", "pocket ops/s",
        "redis ops/s", "throughput ratio pocket/redis (higher is better)",
    ]  # fmt: skip
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
    return out


def _sort(s: Settings, sorts: list[SortResult], targets: list[Target]) -> list[str]:
    out = [f"## c. MapReduce sort, {size_label(s.sort_size)}", ""]
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
    ]  # fmt: skip
    rows = [
        [
            r.store, f"{r.seconds:.2f}", f"{r.map_seconds:.2f}", f"{r.reduce_seconds:.2f}",
            format_size(r.shuffle_bytes), f"{r.shuffle_seconds:.2f}",
            f"{r.shuffle_gbps:.2f}",
            format_size(r.peak_bytes) if r.peak_bytes is not None else "n/a",
            "yes" if r.verified else "NO: " + "; ".join(r.problems),
        ]
        for r in sorts
    ]  # fmt: skip
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
    return out


def render(
    s: Settings,
    command: str,
    machine: list[tuple[str, str]],
    lat: dict[tuple[str, str, int], LatencySeries],
    agg: dict[tuple[str, str, int, int], AggResult],
    sorts: list[SortResult],
    elapsed: float,
) -> tuple[str, list[Target]]:
    """The report (markdown) of the parts that ran, and its target checks."""
    out: list[str] = ["# pocketlib vs Redis: data-plane benchmark", ""]
    out += ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine]
    out += ["", "Command:", "", "```", command, "```", ""]
    mode = "quick (smoke run)" if s.quick else "full"
    out += [f"Mode: {mode}. pocketlib: one `dram` node (`pocketlib.cluster.NodeProcess`, "
            f"capacity {size_label(s.capacity)}), client `pocketlib.connect`. Redis: "
            "`redis-server` (`--save '' --appendonly no`), client redis-py with the hiredis "
            "parser. Both on 127.0.0.1. GB = 10^9 bytes.", ""]  # fmt: skip
    targets: list[Target] = []
    if lat:
        out += _latency(s, lat, targets)
    if agg:
        out += _aggregate(s, agg, targets)
    if sorts:
        out += _sort(s, sorts, targets)

    out += ["## Targets", ""]
    for t in targets:
        want = f">= {t.limit:g}x" if t.higher_is_better else f"<= {t.limit:g}x"
        verdict = "PASS" if t.passed else "MISS"
        out.append(f"- {verdict}: {t.text}: {t.value:.3f}x (want {want}; {t.detail})")
    passed = sum(t.passed for t in targets)
    out += ["", f"{passed} of {len(targets)} targets met.", ""]
    out += [f"Total benchmark runtime: {elapsed:.0f} s.", ""]
    return "\n".join(out), targets
