"""``pocket status``: the controller's view as text tables (nodes, jobs, usage, decisions)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .config import format_rate, format_size

__all__ = ["render"]


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
        u = usage.get(j["id"], {}).get(j["tier"], {})
        rows.append([
            j["id"], j["tier"], j["bound"], format_rate(j["throughput"]),
            format_size(j["capacity"]), format_size(j["used"]), str(j["nodes"]),
            f"v{j['version']}", str(u.get("requests", 0)), f"${u.get('cost') or 0:.6f}",
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
