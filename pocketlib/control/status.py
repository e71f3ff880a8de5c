"""``pocket status``: the controller's view of nodes, jobs and decisions, as a dict and as
text tables; and the per-tick samples of its timeline."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import format_rate, format_size

if TYPE_CHECKING:
    from ..routing.allocation import NodeLoad
    from ..routing.autoscale import Decision
    from .state import JobRecord, NodeRecord

__all__ = ["render", "snapshot", "timeline_sample"]


def timeline_sample(
    per_tier: Mapping[str, int],
    starting: int,
    nodes: Iterable[NodeRecord],
    jobs: Collection[JobRecord],
) -> dict[str, Any]:
    """One tick's sample of the controller's timeline: what the fleet had (``per_tier``:
    nodes not dead), allocated and used (for plots)."""
    live = [n for n in nodes if n.state != "dead"]
    return {
        "t": time.time(),
        "nodes": per_tier,
        "starting": starting,
        "alloc_throughput": sum(t for j in jobs for t, _ in j.alloc.values()),
        "alloc_capacity": sum(c for j in jobs for _, c in j.alloc.values()),
        "net": sum(n.net for n in live),
        "used": sum(n.used for n in live),
        "bandwidth": sum(n.bandwidth for n in live),
        "capacity": sum(n.capacity for n in live),
        "jobs": len(jobs),
    }


def snapshot(
    nodes: Collection[NodeRecord],
    jobs: Iterable[JobRecord],
    loads: Mapping[str, NodeLoad],
    decisions: Iterable[tuple[float, Decision]],
    starting: Iterable[str],
) -> dict[str, Any]:
    """The nodes, starting nodes, jobs and latest decisions of the controller's status (call
    it under the controller's lock: it reads the records as they are)."""
    node_rows = [
        {
            "name": n.name, "address": n.address, "tier": n.tier, "state": n.state,
            "capacity": n.capacity, "bandwidth": n.bandwidth, "cpu": n.cpu,
            "net": n.net, "used": n.used,
            "alloc_capacity": loads[n.name].alloc_capacity if n.name in loads else 0,
            "alloc_throughput": loads[n.name].alloc_throughput if n.name in loads else 0,
            "jobs": loads[n.name].jobs if n.name in loads else 0,
        }
        for n in sorted(nodes, key=lambda n: n.name)
    ]  # fmt: skip
    job_rows = [
        {
            "id": j.id, "name": j.name, "tier": j.demand.tier, "bound": j.demand.bound,
            "tiers": sorted({n.tier for n in nodes if n.name in j.alloc} or {j.demand.tier}),
            "throughput": j.demand.throughput, "capacity": j.demand.capacity,
            "nodes": len(j.alloc), "pending": len(j.pending),
            "version": j.maps[-1].version if j.maps else 0, "created": j.created,
            "used": sum(n.job_bytes.get(j.id, 0) for n in nodes),
        }
        for j in jobs
    ]  # fmt: skip
    latest = [{"t": t, "decision": str(d), "figures": d.figures}
              for t, d in list(decisions)[-20:]]  # fmt: skip
    return {"nodes": node_rows, "starting": sorted(starting), "jobs": job_rows,
            "decisions": latest}  # fmt: skip


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def render(status: dict[str, Any]) -> str:
    """The text ``pocket status`` prints."""
    out: list[str] = [f"controller {status.get('address')}  band {status['band'][0]:.0%}-"
                      f"{status['band'][1]:.0%}"]  # fmt: skip
    nodes = status["nodes"]
    out.append(f"\nnodes ({len(nodes)}, {len(status.get('starting', []))} starting)")
    out.append(_table(
        ["name", "tier", "state", "address", "stored", "alloc cap", "alloc tput", "net", "cpu",
         "jobs"],
        [[n["name"], n["tier"], n["state"], n["address"],
          f"{format_size(n['used'])} ({_pct(n['used'], n['capacity'])})",
          _pct(n["alloc_capacity"], n["capacity"]), _pct(n["alloc_throughput"], n["bandwidth"]),
          format_rate(n["net"]), f"{n['cpu']:.0%}", str(n["jobs"])] for n in nodes],
    ))  # fmt: skip
    usage = status["usage"]["jobs"]
    jobs = status["jobs"]
    out.append(f"\njobs ({len(jobs)})")
    rows = []
    for j in jobs:
        per_tier = usage.get(j["id"], {}).values()  # a job may span tiers: its totals
        requests = sum(u.get("requests", 0) for u in per_tier)
        cost = sum(u.get("cost") or 0 for u in per_tier)
        rows.append([
            j["id"], "+".join(j.get("tiers", [j["tier"]])), j["bound"],
            format_rate(j["throughput"]), format_size(j["capacity"]), format_size(j["used"]),
            str(j["nodes"]), f"v{j['version']}", str(requests), f"${cost:.6f}",
            f"{time.time() - j['created']:.0f}s",
        ])  # fmt: skip
    out.append(_table(["job", "tier", "bound", "throughput", "capacity", "stored", "nodes",
                       "map", "requests", "cost", "age"], rows))  # fmt: skip
    fleet = status["usage"]["fleet"]
    if fleet:
        out.append("\nfleet")
        out.append(_table(
            ["tier", "node-seconds", "cost"],
            [[t, f"{f['node_seconds']:.1f}", f"${f['cost'] or 0:.6f}"] for t, f in fleet.items()],
        ))  # fmt: skip
    if status.get("decisions"):
        out.append("\nautoscaling (latest last)")
        for d in status["decisions"][-10:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(d["t"]))
            out.append(f"  {stamp}  {d['decision']}")
    return "\n".join(out)
