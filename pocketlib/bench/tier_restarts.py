"""Parts d.4 and d.5 of ``pocket bench``: what a file-backed node serves after a restart.

4. NVMe against DRAM, 16 MiB GET: warm (from 1.) and an attempt at a cold read (the node
   restarted, the page cache dropped when ``/proc/sys/vm/drop_caches`` is writable, how much of
   the data file is still cached measured with ``mincore``).
5. Restart after ``kill -9`` with 10,000 objects stored (nvme; hdd when registered): time from
   starting the node to its first answered request, against an empty node's start, and the
   objects the tier reports recovered.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import time

from ..client.client import Client
from ..control.processes import NodeProcess
from ..tiers import available_drivers
from .measure import log
from .settings import COLO_SIZE, RECOVERY_OBJECTS, MiB, Settings, size_label
from .tier_env import connect_job, temp_dir
from .tier_results import ColdRead, Recovery, TierResults

__all__ = ["measure_cold_read", "measure_recovery", "resident_bytes"]


# -- helpers -------------------------------------------------------------------------------


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


# -- 4. cold read --------------------------------------------------------------------------


def measure_cold_read(s: Settings, res: TierResults) -> None:
    if "nvme" not in available_drivers():
        return
    capacity = 256 * MiB
    d = temp_dir("nvme (cold read)", capacity, res.notes)
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
            job = connect_job(str(first.address), "bench-cold", shared=False)
            for k, v in values.items():
                job.put(k, v)
            job.close()
        dropped, why = _drop_caches()
        node = NodeProcess("nvme", capacity, extra_args=args)
        _first_answer(node)
        job = connect_job(str(node.address), "bench-cold", shared=False)
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


def measure_recovery(s: Settings, tier: str, res: TierResults) -> None:
    capacity = 512 * MiB
    d = temp_dir(f"{tier} (recovery)", 2 * capacity, res.notes)
    if d is None:
        return
    items = _objects(RECOVERY_OBJECTS)
    stored = sum(len(v) for v in items.values())
    job_name = "bench-recovery"
    node: NodeProcess | None = None
    try:
        node = NodeProcess(tier, capacity, extra_args=["--path", d])
        job = connect_job(str(node.address), job_name, shared=False)
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
            empty_dir = temp_dir(f"{tier} (empty start)", capacity, res.notes)
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
            job = connect_job(str(node.address), job_name, shared=False)
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
