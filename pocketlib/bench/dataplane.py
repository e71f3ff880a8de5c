"""Data-plane benchmark: pocketlib next to a real redis-server, in the same run.

Four parts, each measured side by side in the same process tree and on the same machine:

a. latency of single PUTs and GETs (one client) at 1 KiB, 64 KiB, 1 MiB and 16 MiB. The
   machine is shared and noisy, so the two systems are interleaved: several rounds, and in each
   round every operation runs a batch on one system and then on the other (the order flips
   every round). Samples are pooled per system; p50, p99 and GB/s (size / p50) are reported.
b. aggregate GB/s with 1, 4 and 8 client processes at 1 MiB and 16 MiB: every process waits
   on a barrier, then repeats its operation for a fixed duration and counts bytes; aggregate =
   total bytes / (last process's end - first process's start).
c. the MapReduce sort of pocketlib.workloads.sort with pocketlib and with Redis as the
   shuffle store, each on a freshly started server.
d. the tiers (only when asked: ``--parts d`` or ``--parts abcd``): PUT and GET per tier
   (dram, nvme, hdd, s3) next to Redis and a raw S3 server, the co-located shared-memory path
   against memcpy and TCP, the sort with co-located clients against plain files on /dev/shm,
   NVMe against DRAM warm and cold, and restart after kill -9 (:mod:`.tiers`).

The report (markdown) goes to stdout and to benchmarks/results/dataplane-<date>.md under the
current directory (or ``--out``); progress goes to stderr. GB are 10^9 bytes throughout.
Run it as ``pocket bench``; the measurement loops are in :mod:`.measure`, the report and its
targets in :mod:`.report`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..client.client import connect
from ..config import format_size
from ..control.processes import NodeProcess
from ..version import __version__
from ..workloads.sort import SortResult
from .measure import AggResult, LatencySeries, bench_aggregate, bench_latency, bench_sort, log
from .redis_peer import RedisServer, redis_version
from .report import render
from .settings import JOB, Settings, command_argv, parse_args
from .tier_env import environment
from .tier_results import TierResults
from .tiers import bench_tiers
from .tiers import machine_info as tiers_machine_info

__all__ = ["default_report_path", "machine_info", "main", "run"]

# The checkout pocketlib was imported from (its git commit goes into the report).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


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
        ("pocketlib", f"{__version__} at {commit}"
                      + (" (pocketlib/ has uncommitted changes)" if dirty else "")),
    ]  # fmt: skip


def _git(*args: str) -> str:
    failed = "unknown" if args[0] != "status" else ""
    if not (SOURCE_ROOT / ".git").exists():
        return failed  # installed from a wheel, not imported from a checkout
    try:
        out = subprocess.run(
            ["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else failed


def command_line(args: argparse.Namespace) -> str:
    return os.environ.get("POCKET_BENCH_COMMAND") or shlex.join(
        ["pocket", "bench", *command_argv(args)]
    )


def default_report_path(quick: bool, today: dt.date | None = None, parts: str = "abc") -> Path:
    """benchmarks/results/<name>-<date>[-quick].md, relative to the current directory: named
    ``dataplane`` for parts a-c, ``tiers`` for part d alone, ``dataplane-<parts>`` otherwise,
    so a run of one part never overwrites the report of another."""
    day = (today or dt.date.today()).isoformat()
    name = {"abc": "dataplane", "d": "tiers"}.get("".join(sorted(parts)), f"dataplane-{parts}")
    return Path("benchmarks", "results", f"{name}-{day}{'-quick' if quick else ''}.md")


# -- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the parts chosen in ``args`` (the options of ``pocket bench``), print and write the
    report. 1 if a sort failed its verification or a measurement of part d failed (the report
    is written all the same and lists it), else 0 (missed targets are only reported)."""
    s = Settings.from_args(args)
    t0 = time.perf_counter()
    machine = machine_info()
    if "d" in s.parts:
        machine += tiers_machine_info()
    # Parts a-c measure the network path, as a client on another host sees it: a client on
    # the node's host would use shared memory for large values (measured in part d).
    with environment({"POCKET_SHARED_MEMORY": "0"}):
        lat, agg, sorts = _network_parts(s)
    tiers: TierResults | None = None
    if "d" in s.parts:
        tiers = bench_tiers(s)
    elapsed = time.perf_counter() - t0
    report, _ = render(s, command_line(args), machine, lat, agg, sorts, elapsed, tiers)
    print(report)
    path = s.out if s.out is not None else default_report_path(s.quick, parts=s.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    log(f"report written to {path}")
    all_sorts = sorts + (tiers.sorts if tiers is not None else [])
    failed = tiers is not None and bool(tiers.failures)
    return 0 if all(r.verified for r in all_sorts) and not failed else 1


def _network_parts(
    s: Settings,
) -> tuple[
    dict[tuple[str, str, int], LatencySeries],
    dict[tuple[str, str, int, int], AggResult],
    list[SortResult],
]:
    """Parts a, b and c (those chosen)."""
    lat: dict[tuple[str, str, int], LatencySeries] = {}
    agg: dict[tuple[str, str, int, int], AggResult] = {}
    sorts: list[SortResult] = []
    if "a" in s.parts or "b" in s.parts:
        with NodeProcess("dram", s.capacity) as node, RedisServer() as server:
            log(f"pocket node at {node.address} (pid {node.pid}), "
                f"redis-server at {server.address} (pid {server.pid})")  # fmt: skip
            if "a" in s.parts:
                job = connect([str(node.address)], job=JOB)
                r = server.client(socket_timeout=60)
                try:
                    lat = bench_latency(s, job, r)
                finally:
                    job.close()
                    r.close()
            if "b" in s.parts:
                agg = bench_aggregate(s, {"pocket": str(node.address), "redis": server.address})
    if "c" in s.parts:
        sorts = bench_sort(s)
    return lat, agg, sorts


def main(argv: list[str] | None = None) -> int:
    """``python -m pocketlib.bench.dataplane [options]``: the same as ``pocket bench``."""
    return run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
