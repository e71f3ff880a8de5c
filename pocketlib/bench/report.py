"""The markdown report of ``pocket bench`` and its target checks: the machine, parts a-c and
the targets; part d's section is :mod:`.tier_report`, the shared pieces :mod:`.report_kit`."""

from __future__ import annotations

import numpy as np

from ..workloads.sort import SortResult
from .measure import AggResult, LatencySeries
from .report_kit import Target, fmt_us, md_table, ratio_of, sort_rows
from .settings import AGG_CLIENTS, AGG_SIZES, LATENCY_SIZES, GiB, KiB, MiB, Settings, size_label
from .tier_report import tiers_section
from .tier_results import TierResults

__all__ = ["Target", "render"]


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
                op, size_label(size), fmt_us(p.pct(50)), fmt_us(rd.pct(50)), fmt_us(p.pct(99)),
                fmt_us(rd.pct(99)), f"{p.gbps:.3f}", f"{rd.gbps:.3f}",
                f"{ratio_of(p.pct(50), rd.pct(50)):.2f}x",
                f"{ratio_of(p.pct(99), rd.pct(99)):.2f}x", f"{ratio_of(p.gbps, rd.gbps):.2f}x",
            ])  # fmt: skip
    out += [*md_table(header, rows, "ll" + "r" * (len(header) - 2)), ""]
    for op in ("GET", "PUT"):
        pl, rl = lat[("pocket", op, 1 * KiB)], lat[("redis", op, 1 * KiB)]
        targets.append(Target(
            f"1 KiB {op} p50: pocket <= 0.6x Redis", ratio_of(pl.pct(50), rl.pct(50)), 0.6,
            False, f"{fmt_us(pl.pct(50))} µs vs {fmt_us(rl.pct(50))} µs",
        ))  # fmt: skip
    for op in ("GET", "PUT"):
        pl, rl = lat[("pocket", op, 16 * MiB)], lat[("redis", op, 16 * MiB)]
        targets.append(Target(
            f"16 MiB {op}, one client: pocket >= 2x Redis's GB/s", ratio_of(pl.gbps, rl.gbps),
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
                    f"{ratio_of(p.gbps, rd.gbps):.2f}x",
                ])  # fmt: skip
    out += [*md_table(header, rows, "llr" + "r" * (len(header) - 3)), ""]
    for op in ("GET", "PUT"):
        p, rd = agg[("pocket", op, 1 * MiB, 8)], agg[("redis", op, 1 * MiB, 8)]
        targets.append(Target(
            f"8 client processes, 1 MiB {op}: pocket >= 1.3x Redis's aggregate GB/s",
            ratio_of(p.gbps, rd.gbps), 1.3, True, f"{p.gbps:.2f} GB/s vs {rd.gbps:.2f} GB/s",
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
    out += [*md_table(header, sort_rows(sorts), "lrrrrrrrl"), ""]
    ps = [r for r in sorts if r.store == "pocketlib"]
    rs = [r for r in sorts if r.store == "redis"]
    p_gbps = float(np.median([r.shuffle_gbps for r in ps]))
    r_gbps = float(np.median([r.shuffle_gbps for r in rs]))
    p_sec = float(np.median([r.seconds for r in ps]))
    r_sec = float(np.median([r.seconds for r in rs]))
    g_ratio, t_ratio = ratio_of(p_gbps, r_gbps), ratio_of(p_sec, r_sec)
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
    tiers: TierResults | None = None,
) -> tuple[str, list[Target]]:
    """The report (markdown) of the parts that ran, and its target checks."""
    out: list[str] = ["# pocketlib vs Redis: data-plane benchmark", ""]
    out += ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine]
    out += ["", "Command:", "", "```", command, "```", ""]
    mode = "quick (smoke run)" if s.quick else "full"
    if lat or agg or sorts:
        out += [f"Mode: {mode}. pocketlib: one `dram` node (`control.processes.NodeProcess`, "
                f"capacity {size_label(s.capacity)}), client `pocketlib.connect`. Redis: "
                "`redis-server` (`--save '' --appendonly no`), client redis-py with the "
                "hiredis parser. Both on 127.0.0.1. GB = 10^9 bytes.", ""]  # fmt: skip
    else:
        out += [f"Mode: {mode}. Every server on 127.0.0.1. GB = 10^9 bytes.", ""]
    targets: list[Target] = []
    if lat:
        out += _latency(s, lat, targets)
    if agg:
        out += _aggregate(s, agg, targets)
    if sorts:
        out += _sort(s, sorts, targets)
    if tiers is not None:
        out += tiers_section(s, tiers, targets)

    out += ["## Targets", ""]
    out += [t.line() for t in targets]
    passed = sum(t.passed for t in targets)
    out += ["", f"{passed} of {len(targets)} targets met.", ""]
    out += [f"Total benchmark runtime: {elapsed:.0f} s.", ""]
    return "\n".join(out), targets
