"""The paper's autoscaling experiment on a LocalCluster: three jobs come and go.

Pocket registered three latency-sensitive jobs over about five minutes (a sort of 12 GB at
24 Gb/s, video analytics of 18 GB at 24 Gb/s, another sort) and its fleet went
2 -> 3 -> 2 -> 3 -> 6 -> 2 nodes. Here the same three jobs run with hints scaled to this
machine: a node is ``--node-bandwidth`` (100 MB/s) instead of 1 GB/s and ``--node-capacity``
(128 MiB) instead of 60 GB, so each job asks for three nodes' worth of throughput, as in the
paper. Each job does real puts and gets for its whole life (paced to about half of its hint):
the sorts write partitions and read them back with delete-after-read, the video job writes
frames, reads them and deletes them.

Run ``python -m pocketlib.bench.autoscale`` (about two minutes). It writes a PNG of nodes,
allocated and used throughput and capacity over time, and a markdown report with the
node-seconds used against a fleet statically provisioned for the peak.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client.client import Client
from ..config import JobHints, format_rate, format_size, parse_size, parse_throughput
from ..control.cluster import LocalCluster
from ..errors import PocketError

__all__ = ["Experiment", "JobPlan", "main", "plot", "run"]


@dataclass(frozen=True)
class JobPlan:
    """One job of the experiment: when it comes, how long it stays, what it asks and does."""

    name: str
    start: float
    duration: float
    hints: JobHints
    #: "sort" (1 MiB partitions) or "video" (64 KiB frames).
    kind: str
    #: Bytes/s the job's functions actually move (paced).
    rate: int


@dataclass
class Experiment:
    """What happened: the controller's samples, the jobs' spans and the decisions."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    register_ms: list[float] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    t0: float = 0.0

    def _integral(self, value: Callable[[dict[str, Any]], float]) -> tuple[float, float]:
        """(the integral over time of ``value(sample)``, held until the next sample; its peak)."""
        total = peak = 0.0
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            v = value(a)
            total += v * (b["t"] - a["t"])
            peak = max(peak, v)
        return total, peak

    @property
    def duration(self) -> float:
        """Seconds from the first sample to the last."""
        return float(self.samples[-1]["t"] - self.samples[0]["t"])

    def throughput_seconds(self) -> tuple[float, float, float]:
        """(allocated, used, static peak fleet bandwidth) x seconds, in bytes."""
        alloc, _ = self._integral(lambda s: s["alloc_throughput"])
        used, _ = self._integral(lambda s: s["net"])
        _, peak = self._integral(lambda s: s["bandwidth"])
        return alloc, used, peak * self.duration

    def node_seconds(self) -> tuple[float, float, int]:
        """(node-seconds used, node-seconds of a static fleet sized for the peak, peak)."""
        used, peak = self._integral(lambda s: sum(s["nodes"].values()))
        return used, peak * self.duration, int(peak)


def paper_plan(bandwidth: int, capacity: int, time_scale: float = 1.0) -> list[JobPlan]:
    """The paper's three jobs, scaled to nodes of ``bandwidth`` and ``capacity``.

    Pocket's node: about 1 GB/s and 60 GB. 24 Gb/s is three nodes' worth of throughput; 12 GB
    and 18 GB are a fifth and a third of a node's capacity. The schedule keeps the paper's
    order (a sort alone, then video analytics joined by a second sort); at ``time_scale`` 1 it
    lasts 100 s, a third of the paper's five minutes.
    """
    tput = 3 * bandwidth
    sort = JobHints(capacity=int(capacity * 12 / 60), peak_throughput=tput)
    video = JobHints(capacity=int(capacity * 18 / 60), peak_throughput=tput)
    pace = tput // 2
    k = time_scale
    return [
        JobPlan("sort-1", 5 * k, 25 * k, sort, "sort", pace),
        JobPlan("video", 40 * k, 45 * k, video, "video", pace),
        JobPlan("sort-2", 55 * k, 25 * k, sort, "sort", pace),
    ]


def _work(
    job: Any, plan: JobPlan, stop: threading.Event, moved: list[int], seed: int,
    errors: list[str],
) -> None:  # fmt: skip
    """Real puts and gets; the job's workers share ``moved`` and pace it to ``plan.rate``."""
    size = 1 << 20 if plan.kind == "sort" else 64 << 10
    value = bytes([seed]) * size
    batch = 8
    i = 0
    began = time.monotonic()
    while not stop.is_set():
        keys = [f"w{seed}/{i + k}" for k in range(batch)]
        try:
            job.put_many(dict.fromkeys(keys, value))
            if plan.kind == "sort":
                got = job.get_many(keys, delete_after_read=True)
            else:
                got = job.get_many(keys)
                for key in keys:
                    job.delete(key)
        except PocketError as exc:  # counted and reported: the run goes on
            errors.append(f"{type(exc).__name__}: {exc}")
            stop.wait(0.1)
            continue
        if len(got) != len(keys) or any(v != value for v in got.values()):
            errors.append(f"{len(keys) - len(got)} value(s) missing or wrong")
        moved[0] += 2 * batch * size
        i += batch
        # Pace: sleep until the job is back on its rate (bytes in and out of the nodes).
        ahead = moved[0] / plan.rate - (time.monotonic() - began)
        if ahead > 0:
            stop.wait(ahead)


def run(
    plans: list[JobPlan],
    *,
    node_capacity: int,
    node_bandwidth: int,
    tail: float = 15.0,
    scale_down_delay: float = 5.0,
    log: Any = None,
) -> Experiment:
    """Run ``plans`` on a fresh LocalCluster of two DRAM nodes; what the controller saw."""
    out = Experiment()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with LocalCluster(
        {"dram": 2}, node_capacity=node_capacity, node_bandwidth=node_bandwidth, max_nodes=12,
        tick=1.0, scale_down_delay=scale_down_delay,
    ) as cluster:  # fmt: skip
        controller = cluster.controller
        client = Client(cluster.address)
        out.t0 = time.time()
        end = max(p.start + p.duration for p in plans) + tail
        running: dict[str, tuple[Any, threading.Event, list[threading.Thread], list[int]]] = {}
        pending = sorted(plans, key=lambda p: p.start)
        while True:
            now = time.time() - out.t0
            for plan in [p for p in pending if p.start <= now]:
                pending.remove(plan)
                t = time.perf_counter()
                job = client.register_job(plan.name, plan.hints)
                out.register_ms.append((time.perf_counter() - t) * 1e3)
                stop = threading.Event()
                moved = [0]
                errors = out.errors.setdefault(plan.name, [])
                threads = [
                    threading.Thread(
                        target=_work, args=(job, plan, stop, moved, s, errors), daemon=True
                    )
                    for s in (1, 2)
                ]
                for th in threads:
                    th.start()
                running[plan.name] = (job, stop, threads, moved)
                say(f"[{now:5.1f}s] {plan.name} registered: {len(job.ticket.nodes)} node(s)")
            for plan in plans:
                if plan.name in running and now >= plan.start + plan.duration:
                    job, stop, threads, moved = running.pop(plan.name)
                    stop.set()
                    for th in threads:
                        th.join()
                    job.deregister()
                    out.moved[plan.name] = moved[0]
                    out.spans.append((plan.name, plan.start, now))
                    say(f"[{now:5.1f}s] {plan.name} deregistered after moving "
                        f"{format_size(moved[0])}")  # fmt: skip
            if now >= end and not running and not pending:
                break
            time.sleep(0.1)
        with controller.lock:
            out.samples = [dict(s) for s in controller.timeline if s["t"] >= out.t0]
            out.decisions = [{"t": t - out.t0, "decision": str(d)}
                             for t, d in controller.decisions if t >= out.t0]  # fmt: skip
        client.close()
    return out


def plot(exp: Experiment, path: Path, title: str) -> None:
    """Nodes, throughput and capacity over time (matplotlib, written as PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] - exp.t0 for s in exp.samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    nodes, tput, cap = axes
    nodes.step(t, [sum(s["nodes"].values()) for s in exp.samples], where="post",
               color="black", label="nodes")  # fmt: skip
    nodes.set_ylabel("storage nodes")
    nodes.set_ylim(bottom=0)
    mb = 1e6
    tput.plot(t, [s["bandwidth"] / mb for s in exp.samples], color="grey", ls=":",
              label="fleet bandwidth")  # fmt: skip
    tput.plot(t, [s["alloc_throughput"] / mb for s in exp.samples], color="tab:blue",
              label="allocated")  # fmt: skip
    tput.plot(t, [s["net"] / mb for s in exp.samples], color="tab:orange", label="used")
    tput.set_ylabel("throughput (MB/s)")
    mib = 2**20
    cap.plot(t, [s["capacity"] / mib for s in exp.samples], color="grey", ls=":",
             label="fleet capacity")  # fmt: skip
    cap.plot(t, [s["alloc_capacity"] / mib for s in exp.samples], color="tab:blue",
             label="allocated")  # fmt: skip
    cap.plot(t, [s["used"] / mib for s in exp.samples], color="tab:orange", label="used")
    cap.set_ylabel("capacity (MiB)")
    cap.set_xlabel("seconds")
    colours = ["tab:green", "tab:purple", "tab:red"]
    for (name, a, b), colour in zip(exp.spans, colours * 3, strict=False):
        for ax in axes:
            ax.axvspan(a, b, color=colour, alpha=0.08)
        nodes.text((a + b) / 2, 0.3, name, ha="center", fontsize=8, color=colour)
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(exp: Experiment, plans: list[JobPlan], png: Path, command: str) -> str:
    """The markdown report."""
    used, static, peak = exp.node_seconds()
    alloc_ts, used_ts, static_ts = exp.throughput_seconds()
    duration = exp.duration
    per_node = max(s["bandwidth"] / max(sum(s["nodes"].values()), 1) for s in exp.samples)
    # What the hints of the jobs running at once add up to, at its largest (allocations can
    # exceed it when the autoscaler grows a hot job, so they are not used here).
    spans = {name: (a, b) for name, a, b in exp.spans}
    declared = max(
        sum(int(p.hints.peak_throughput or 0) for p in plans
            if spans.get(p.name, (0.0, -1.0))[0] <= t < spans.get(p.name, (0.0, -1.0))[1])
        for t in (s["t"] - exp.t0 for s in exp.samples)
    )  # fmt: skip
    demand_peak = math.ceil(declared / per_node - 1e-9)
    counts: list[int] = []
    for s in exp.samples:
        n = sum(s["nodes"].values())
        if not counts or counts[-1] != n:
            counts.append(n)
    lines = [
        f"# Autoscaling experiment ({dt.date.today().isoformat()})", "",
        f"Command: `{command}`", "",
        f"Plot: `{png}`", "",
        "| job | arrives (s) | stays (s) | hints | moved | errors |", "|---|--:|--:|---|--:|--:|",
    ]  # fmt: skip
    for p in plans:
        cap = format_size(int(p.hints.capacity or 0))
        rate = format_rate(int(p.hints.peak_throughput or 0))
        lines.append(f"| {p.name} ({p.kind}) | {p.start:.0f} | {p.duration:.0f} | {cap}, {rate} "
                     f"| {format_size(exp.moved.get(p.name, 0))} | "
                     f"{len(exp.errors.get(p.name, []))} |")  # fmt: skip
    lines += [
        "",
        f"- Fleet over time (distinct node counts in order): {' -> '.join(map(str, counts))}",
        f"- Node-seconds used: {used:.0f}; a static fleet of the peak ({peak} nodes) for the same "
        f"{exp.samples[-1]['t'] - exp.samples[0]['t']:.0f} s: {static:.0f}; "
        f"**ratio {used / static:.2f}** (target <= 0.50)",
        f"- Against a static fleet sized for the jobs' declared peak ({demand_peak} nodes: the "
        f"throughput hints of the jobs running at once, at most, over a node's bandwidth): "
        f"{demand_peak * duration:.0f} "
        f"node-seconds, ratio **{used / (demand_peak * duration):.2f}**",
        f"- Throughput-seconds: allocated {alloc_ts / 1e9:.1f} GB, used {used_ts / 1e9:.1f} GB, "
        f"a static fleet's bandwidth {static_ts / 1e9:.1f} GB: allocated/static "
        f"**{alloc_ts / static_ts:.2f}**, used/static {used_ts / static_ts:.2f}",
        f"- register_job: p50 {statistics.median(exp.register_ms):.1f} ms, max "
        f"{max(exp.register_ms):.1f} ms over {len(exp.register_ms)} registrations ("
        f"{', '.join(f'{ms:.1f}' for ms in exp.register_ms)} ms; none waits for a node to start)",
        "", "Autoscaling decisions:", "",
    ]  # fmt: skip
    lines += [f"- {d['t']:6.1f} s: {d['decision']}" for d in exp.decisions]
    for name, errs in exp.errors.items():
        if errs:
            lines += ["", f"Errors of {name} (first 5 of {len(errs)}):", ""]
            lines += [f"- {e}" for e in errs[:5]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m pocketlib.bench.autoscale``."""
    parser = argparse.ArgumentParser(prog="python -m pocketlib.bench.autoscale",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--node-capacity", default="128MiB")
    parser.add_argument("--node-bandwidth", default="100MB/s")
    parser.add_argument("--png", default="docs/autoscaling.png")
    parser.add_argument(
        "--time-scale", type=float, default=1.0,
        help="stretch the 100-s schedule (3 is the paper's five minutes)",
    )  # fmt: skip
    parser.add_argument("--scale-down-delay", type=float, default=5.0,
                        help="seconds a tier stays cold before a drain")  # fmt: skip
    parser.add_argument("--out", default=None, help="report path (default: benchmarks/results/"
                        "autoscale-<date>.md)")  # fmt: skip
    args = parser.parse_args(argv)
    capacity, bandwidth = parse_size(args.node_capacity), parse_throughput(args.node_bandwidth)
    plans = paper_plan(bandwidth, capacity, args.time_scale)
    exp = run(plans, node_capacity=capacity, node_bandwidth=bandwidth,
              scale_down_delay=args.scale_down_delay)  # fmt: skip
    png = Path(args.png)
    used, static, _ = exp.node_seconds()
    title = (
        f"Three jobs on a LocalCluster ({format_rate(bandwidth)}, {format_size(capacity)} "
        f"nodes): {used:.0f} node-s vs {static:.0f} static"
    )
    plot(exp, png, title)
    command = "python -m pocketlib.bench.autoscale " + " ".join(argv or sys.argv[1:])
    text = report(exp, plans, png, command.strip())
    out = Path(args.out or f"benchmarks/results/autoscale-{dt.date.today().isoformat()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
