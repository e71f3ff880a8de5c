"""Where the time of a co-located (or TCP) 16 MiB ``get_into`` goes: a loop under py-spy.

Starts one dram node, then a client process that repeats ``job.get_into(key, buffer)`` for a
while, with the co-located path on (``--mode shm``) or off (``--mode tcp``), under
``py-spy record --native -f raw``. Prints ms per operation (also measured without the
profiler), and the share of the samples inside ``get_into`` spent copying out of the mapping
(``SharedArena.read_into``) or receiving from the socket, hashing (``checksum``), and the rest
(request, reply header, release). The raw samples of ``get_into`` are kept::

    python benchmarks/profile_colocated.py --mode shm --duration 6
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pocketlib.config import parse_size

OUT = Path(__file__).resolve().parent / "results" / "profiles"


def loop(address: str, mode: str, size: int, duration: float) -> None:
    from pocketlib.bench.tiers import _connect

    job = _connect(address, "profile-colocated", shared=mode == "shm")
    buf = bytearray(size)
    job.put("k", os.urandom(size))
    job.get_into("k", buf)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        job.get_into("k", buf)
        n += 1
    print(f"{mode}: {n} ops, {(time.perf_counter() - start) / n * 1e3:.2f} ms/op", flush=True)
    job.close()


def categorize(raw: Path) -> tuple[int, collections.Counter[str]]:
    share: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "Job.get_into" not in stack:
            continue
        n = int(count)
        total += n
        if "read_into" in stack or "recv_into" in stack or "readinto" in stack:
            share["copy (mapping -> buffer, or socket -> buffer)"] += n
        elif "checksum" in stack:
            share["XXH3 checksum"] += n
        else:
            share["request, reply header, release"] += n
    return total, share


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("shm", "tcp"), default="shm")
    p.add_argument("--size", default="16MiB")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--loop", help=argparse.SUPPRESS)  # internal: run the client loop
    a = p.parse_args()
    size = parse_size(a.size)
    if a.loop:
        loop(a.loop, a.mode, size, a.duration)
        return 0
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not on PATH (pip install py-spy)", file=sys.stderr)
        return 1
    from pocketlib.control.processes import NodeProcess

    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"colocated-get_into-{a.mode}-{a.size}.txt"
    me = [sys.executable, __file__, "--mode", a.mode, "--size", a.size]
    with NodeProcess("dram", max(512 << 20, 4 * size)) as node:
        args = [*me, "--duration", str(a.duration), "--loop", str(node.address)]
        subprocess.run(args, check=True)  # without the profiler
        subprocess.run(
            [spy, "record", "--native", "-r", "500", "-f", "raw", "-o", str(raw), "--", *args],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    total, share = categorize(raw)
    # Keep only the samples of get_into (the rest is start-up).
    kept = [line for line in raw.read_text().splitlines() if "Job.get_into" in line]
    raw.write_text("\n".join(kept) + "\n")
    print(f"samples inside get_into: {total}")
    for what, n in share.most_common():
        print(f"  {100 * n / total:5.1f}%  {what}")
    print(f"raw samples: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
