"""Where the time of one operation goes: a client loop under py-spy, with CPU accounting.

Starts a pocketlib node (or a redis-server), runs one client process repeating one operation
(GET or PUT of one size) for a while, and meanwhile

* records the server (pocketlib node only: redis-server is not Python) and the client with
  ``py-spy record -f raw`` (``--native`` adds C frames, so socket calls show by name);
* measures CPU seconds (user and system) the client and the server spent per operation, from
  ``/proc/<pid>/stat``, next to the loop's p50 latency: what is not CPU on either side is
  wake-ups and the loopback path in the kernel.

It prints a summary (top functions by self and by inclusive share) and keeps the raw profiles::

    python benchmarks/profile_loop.py --system pocket --op GET --size 1KiB --duration 5
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pocketlib
from pocketlib.bench.redis_peer import RedisServer
from pocketlib.config import parse_size
from pocketlib.control.processes import NodeProcess

TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _client(
    system: str, address: str, op: str, size: int, seconds: float, server_pid: int,
    ready: Any, go: Any, results: Any,
) -> None:  # fmt: skip
    value = os.urandom(size)
    if system == "pocket":
        job = pocketlib.connect([address], job="profile")
        put: Callable[[], Any] = functools.partial(job.put, "k", value)
        get: Callable[[], Any] = functools.partial(job.get, "k")
    else:
        import redis

        host, port = address.rsplit(":", 1)
        r = redis.Redis(host=host, port=int(port))
        put = functools.partial(r.set, "k", value)
        get = functools.partial(r.get, "k")
    put()
    fn = put if op == "PUT" else get
    for _ in range(200):
        fn()
    ready.set()
    go.wait()
    clock = time.perf_counter_ns
    lat: list[int] = []
    s0, c0, t0 = cpu_times(server_pid), os.times(), time.perf_counter()
    deadline = t0 + seconds
    while True:
        t = clock()
        fn()
        lat.append(clock() - t)
        if len(lat) % 64 == 0 and time.perf_counter() >= deadline:
            break
    t1, c1, s1 = time.perf_counter(), os.times(), cpu_times(server_pid)
    lat.sort()
    results.put({
        "ops": len(lat), "seconds": t1 - t0, "p50_us": lat[len(lat) // 2] / 1e3,
        "client_user": c1.user - c0.user, "client_sys": c1.system - c0.system,
        "server_user": s1[0] - s0[0], "server_sys": s1[1] - s0[1],
    })  # fmt: skip


def summarize(raw: Path, top: int = 15, focus: str = "") -> list[str]:
    """Top frames of a py-spy raw profile by self and by inclusive share.

    With ``focus``, only stacks that pass through that frame count (the node's connection
    threads, not its idle accept and main threads).
    """
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = [_strip_line(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames or (focus and not any(f.startswith(focus) for f in frames)):
            continue
        total += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            incl_counts[f] += n
    if not total:
        return [f"{raw.name}: no samples"]
    where = f" in {focus}" if focus else ""
    out = [f"{raw.name}: {total} samples{where}", "  self (leaf frame):"]
    out += [f"    {n / total:6.1%}  {f}" for f, n in self_counts.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {n / total:6.1%}  {f}" for f, n in incl_counts.most_common(top)]
    return out


def _strace_rows(path: Path) -> dict[str, tuple[float, int]]:
    """syscall -> (% of syscall time, calls) from an ``strace -c`` summary."""
    rows: dict[str, tuple[float, int]] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            rows[parts[-1]] = (float(parts[0]), int(parts[3]))
    return rows


def _strace_per_op(path: Path, requests: int, top: int = 8) -> list[str]:
    """The busiest syscalls of an ``strace -c`` summary, as calls per request."""
    rows = sorted(_strace_rows(path).items(), key=lambda kv: -kv[1][1])
    return [f"    {name:<16} {calls / requests:5.2f} calls/request  {pct:5.1f}% of syscall time"
            for name, (pct, calls) in rows[:top] if calls / requests >= 0.01]  # fmt: skip


def _strip_line(frame: str) -> str:
    # "func (file.py:123)" -> "func (file.py)"
    if frame.endswith(")") and ":" in frame:
        head, _, tail = frame.rpartition(":")
        if tail[:-1].isdigit():
            return head + ")"
    return frame


def _spy(
    pid: int, out: Path, seconds: float, native: bool, idle: bool, gil: bool
) -> subprocess.Popen[bytes]:
    args = ["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-d",
            str(int(seconds)), "-r", "200"]  # fmt: skip
    for flag, on in (("--native", native), ("--idle", idle), ("--gil", gil)):
        if on:
            args.append(flag)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _strace(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    args = ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid),
            "-o", str(out)]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _server(system: str) -> Iterator[tuple[str, int]]:
    if system == "pocket":
        with NodeProcess("dram", "1GiB") as node:
            yield str(node.address), node.pid
    else:
        with RedisServer() as server:
            yield server.address, server.pid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=["pocket", "redis"], default="pocket")
    p.add_argument("--op", choices=["GET", "PUT"], default="GET")
    p.add_argument("--size", default="1KiB")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--out-dir", type=Path, default=Path("/tmp/pocket-profiles"))
    p.add_argument("--no-spy", action="store_true", help="CPU accounting only, no py-spy")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    p.add_argument("--idle", action="store_true", help="py-spy --idle on the client")
    p.add_argument("--gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    p.add_argument("--strace", action="store_true", help="strace -c (syscall counts) instead")
    a = p.parse_args(argv)
    size = parse_size(a.size)
    spy = not a.no_spy and shutil.which("py-spy") is not None
    strace = a.strace and shutil.which("strace") is not None
    spy = spy and not strace
    a.out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{a.system}-{a.op.lower()}-{a.size}"
    ctx = multiprocessing.get_context("fork")
    gen = _server(a.system)
    address, server_pid = next(gen)
    try:
        ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
        seconds = a.duration + (1.0 if spy or strace else 0.0)
        proc = ctx.Process(
            target=_client,
            args=(a.system, address, a.op, size, seconds, server_pid, ready, go, results),
        )
        proc.start()
        try:
            ready.wait(60)
            spies: list[tuple[Path, subprocess.Popen[bytes]]] = []
            if spy or strace:
                for role, pid in (("client", proc.pid), ("server", server_pid)):
                    if spy and role == "server" and a.system != "pocket":
                        continue  # redis-server is not a Python process
                    if strace:
                        out = a.out_dir / f"{tag}-{role}.strace"
                        spies.append((out, _strace(pid, out, a.duration)))
                    else:
                        out = a.out_dir / f"{tag}-{role}.txt"
                        idle = a.idle and role == "client"
                        spies.append((out, _spy(pid, out, a.duration, a.native, idle, a.gil)))
                time.sleep(0.5)  # let the tracers attach before the timed loop starts
            go.set()
            res = results.get(timeout=seconds + 120)
            for _, sp in spies:
                sp.wait(timeout=60)
        finally:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    finally:
        gen.close()
    ops = res["ops"]
    print(f"{tag}: {ops} ops in {res['seconds']:.2f} s, p50 {res['p50_us']:.1f} µs"
          f"{' (under py-spy)' if spy else ' (under strace)' if strace else ''}")  # fmt: skip
    per = 1e6 / ops
    print(f"  client CPU per op: user {res['client_user'] * per:.1f} µs, "
          f"sys {res['client_sys'] * per:.1f} µs")  # fmt: skip
    print(f"  server CPU per op: user {res['server_user'] * per:.1f} µs, "
          f"sys {res['server_sys'] * per:.1f} µs")  # fmt: skip
    for out, _ in spies:
        if not out.exists():
            continue
        if strace:
            # Requests seen while traced: the client sends each request with one sendto.
            traced = _strace_rows(spies[0][0]).get("sendto", (0.0, 0))[1] or ops
            print(f"{out.name}: syscalls per request ({traced} requests traced)")
            print("\n".join(_strace_per_op(out, traced)))
        else:
            focus = "StorageNode._serve" if out.stem.endswith("-server") else ""
            print("\n".join(summarize(out, focus=focus)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
