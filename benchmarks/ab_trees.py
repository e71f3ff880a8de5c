"""Two source trees of pocketlib side by side: did a refactor cost anything on the data path?

Runs the same short loop in a fresh interpreter per round, alternating the trees so that the
machine's drift falls on both, and prints the median of the rounds and the ratio after /
before. The loop is either single operations (p50 of GET/PUT at 1 KiB, 1 MiB and 16 MiB
against one ``dram`` node over TCP) or batches (``--workload batches``: medians of put_many and
get_many of small to 256 KiB values over ``--nodes`` nodes)::

    git worktree add /tmp/base <commit-before>
    python benchmarks/ab_trees.py --before /tmp/base --after . --rounds 8
    python benchmarks/ab_trees.py --before /tmp/base --after . --workload batches --nodes 4

Absolute microseconds mean little on a shared machine; the ratio is the result. Each round is
its own process, so each tree imports only its own pocketlib (the tree is put first on
``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MiB = 1 << 20


def _p50_us(op: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        op()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def one_round() -> dict[str, float]:
    """Time the operations with whatever pocketlib this interpreter imports."""
    try:
        from pocketlib.control.processes import NodeProcess
    except ImportError:  # a tree from before the control/ package: the node process lived here
        from pocketlib.cluster import NodeProcess  # type: ignore[no-redef,import-not-found]
    from pocketlib import connect

    with NodeProcess("dram", 1024 * MiB) as node:
        job = connect([str(node.address)], job="ab")
        small, mid, large = os.urandom(1024), os.urandom(MiB), os.urandom(16 * MiB)
        job.put("small", small)
        job.put("mid", mid)
        buf = bytearray(MiB)
        for _ in range(200):  # warm the pools and the allocator before timing
            job.get("mid")
        return {
            "GET 1 KiB": _p50_us(lambda: job.get("small"), 3000),
            "PUT 1 KiB": _p50_us(lambda: job.put("small", small), 3000),
            "GET 1 MiB": _p50_us(lambda: job.get("mid"), 1500),
            "GET (get_into) 1 MiB": _p50_us(lambda: job.get_into("mid", buf), 1500),
            "PUT 16 MiB": _p50_us(lambda: job.put("large", large), 100),
        }


#: Batches of ``--workload batches``: (keys, value bytes).
BATCHES = ((1000, 100), (1000, 1024), (100, 16 * 1024), (200, 256 * 1024))


def one_round_batches(nodes: int) -> dict[str, float]:
    """Median µs of put_many and get_many of each of :data:`BATCHES` over ``nodes`` nodes."""
    from contextlib import ExitStack

    from pocketlib import connect
    from pocketlib.control.processes import NodeProcess

    times: dict[str, float] = {}
    with ExitStack() as stack:
        procs = [stack.enter_context(NodeProcess("dram", 512 * MiB)) for _ in range(nodes)]
        job = connect([str(p.address) for p in procs], job="ab-batches")
        for n, size in BATCHES:
            items = {f"b/{n}/{size}/{i}": os.urandom(size) for i in range(n)}
            keys = list(items)
            job.put_many(items)
            ops: dict[str, Callable[[], object]] = {
                "put_many": functools.partial(job.put_many, items),
                "get_many": functools.partial(job.get_many, keys),
            }
            for name, op in ops.items():
                for _ in range(3):
                    op()
                times[f"{name} {n} x {size} B, {nodes} nodes"] = _p50_us(op, 25)
        job.purge()
    return times


def _run_tree(tree: str, workload: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run(
        [sys.executable, __file__, "--one-round", *workload],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    imported = str(answer["tree"])
    result: dict[str, float] = answer["times"]
    if not os.path.realpath(imported).startswith(os.path.realpath(tree) + os.sep):
        sys.exit(f"asked to time {tree}, but the round imported pocketlib from {imported}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--before", help="source tree before the change (holds pocketlib/)")
    ap.add_argument("--after", help="source tree after the change")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--workload", choices=("ops", "batches"), default="ops")
    ap.add_argument("--nodes", type=int, default=1, help="nodes of --workload batches")
    ap.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_round:
        import pocketlib  # (its path: the caller checks it timed the tree it meant)

        times = one_round() if args.workload == "ops" else one_round_batches(args.nodes)
        print(json.dumps({"tree": pocketlib.__file__, "times": times}))
        return
    if not (args.before and args.after):
        ap.error("--before and --after are required")
    rounds: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for side in ("before", "after"):
            workload = ["--workload", args.workload, "--nodes", str(args.nodes)]
            rounds[side].append(_run_tree(getattr(args, side), workload))
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    print("| operation | before (µs, median of rounds) | after | after / before |")
    print("| --- | --- | --- | --- |")
    for op in rounds["before"][0]:
        before = statistics.median(r[op] for r in rounds["before"])
        after = statistics.median(r[op] for r in rounds["after"])
        print(f"| {op} | {before:.0f} | {after:.0f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
