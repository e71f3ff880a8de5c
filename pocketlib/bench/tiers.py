"""Part d of ``pocket bench``: the storage tiers, the co-located path, and recovery.

1. PUT and GET of 1 KiB and 16 MiB, one client over TCP, on every tier beside Redis and the
   raw S3 server; 2. the co-located path on the dram node against memcpy and TCP
   (:mod:`.tier_latency`).
3. The sort of part c with co-located clients (reducers read zero-copy) against the same sort
   through :class:`~.fileshuffle.FileShuffle` (plain files on /dev/shm, ``write(2)`` and
   ``read(2)``): here.
4. NVMe against DRAM, warm and an attempt at a cold read; 5. restart after ``kill -9`` with
   10,000 objects stored (:mod:`.tier_restarts`).

What they measured is a :class:`~.tier_results.TierResults`, rendered by :mod:`.tier_report`.
Every server started here binds 127.0.0.1 and is stopped by its PID, also on errors; every
temporary directory is removed.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import time
from collections.abc import Callable

from ..control.processes import NodeProcess
from ..tiers import available_drivers
from ..workloads.sort import PocketShuffle, ShuffleStore, run_sort
from .fileshuffle import FileShuffle
from .measure import log
from .settings import GiB, Settings, size_label
from .tier_env import connect_job, environment, record_failure
from .tier_latency import measure_tiers_and_colocated
from .tier_restarts import measure_cold_read, measure_recovery
from .tier_results import TierResults

__all__ = ["ColocatedShuffle", "bench_tiers", "machine_info"]

SORT_JOB = "bench-sort-colo"


class ColocatedShuffle(PocketShuffle):
    """PocketShuffle, named for the report: the workers run on the node's host."""

    name = "pocketlib (co-located)"


def machine_info() -> list[tuple[str, str]]:
    """What part d adds to the report's machine list: the S3 server and client versions."""
    from ..testing.s3server import weed_binary

    out: list[tuple[str, str]] = []
    weed = weed_binary()
    if weed is not None:
        import subprocess

        try:
            got = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30)
            version = got.stdout.strip().splitlines()[0] if got.stdout.strip() else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            version = "unknown"
        out.append(("SeaweedFS (`weed`)", version))
    if importlib.util.find_spec("boto3") is not None:
        import boto3

        out.append(("boto3", str(boto3.__version__)))
    return out


# -- 3. sort -------------------------------------------------------------------------------


def _sorts(s: Settings, res: TierResults) -> None:
    free = shutil.disk_usage("/dev/shm").free
    need = int(s.sort_size * 1.2) + s.capacity
    if free < need:
        res.notes.append(f"sort: skipped, /dev/shm has {free / GiB:.1f} GiB free, needs "
                         f"{need / GiB:.1f} GiB (files + the node's arena)")  # fmt: skip
        return
    # The servers of d.1 left dirty pages (nvme, hdd, SeaweedFS files): write them back now,
    # not in the background of the sorts.
    os.sync()
    systems = ("pocket", "files")
    for i in range(s.sort_runs):
        for system in systems if i % 2 == 0 else systems[::-1]:
            log(f"sort {size_label(s.sort_size)} through {system} "
                f"({s.mappers} mappers, {s.reducers} reducers)")  # fmt: skip
            store: ShuffleStore
            if system == "pocket":
                # The workers fork from here: the co-located path is on for them.
                with (
                    environment({"POCKET_SHARED_MEMORY": "1"}),
                    NodeProcess("dram", s.capacity) as node,
                ):
                    probe = connect_job(str(node.address), SORT_JOB, shared=True)
                    mapped = probe.client.arena(str(node.address)) is not None
                    probe.close()
                    if not mapped:
                        res.notes.append("sort: the co-located path was not available; "
                                         "pocketlib ran over TCP")  # fmt: skip
                    store = ColocatedShuffle([str(node.address)], job=SORT_JOB)
                    try:
                        r = run_sort(store, s.sort_size, s.mappers, s.reducers)
                    finally:
                        store.cleanup()
            else:
                store = FileShuffle("/dev/shm")
                try:
                    r = run_sort(store, s.sort_size, s.mappers, s.reducers)
                finally:
                    store.cleanup()
            log(f"  {r.seconds:.2f} s, shuffle {r.shuffle_gbps:.2f} GB/s, verified={r.verified}")
            res.sorts.append(r)


# -- the whole part ------------------------------------------------------------------------


def bench_tiers(s: Settings) -> TierResults:
    """Part d: every measurement above, each with the servers it needs started and stopped."""
    t0 = time.perf_counter()
    res = TierResults()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("d.1-d.2 tiers and co-located path", lambda: measure_tiers_and_colocated(s, res)),
        ("d.3 sort", lambda: _sorts(s, res)),
        ("d.4 nvme cold read", lambda: measure_cold_read(s, res)),
    ]
    drivers = available_drivers()
    for tier in ("nvme", "hdd"):
        if tier in drivers:
            steps.append(
                (f"d.5 {tier} recovery", functools.partial(measure_recovery, s, tier, res))
            )
    # A measurement that fails (a tier that does not start, a server that dies) is reported
    # and the others still run; the servers it started are stopped by their context managers.
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            record_failure(res, what, exc)
    res.seconds = time.perf_counter() - t0
    return res
