"""The autoscaling experiment's arithmetic and plot, on a recorded timeline (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketlib.bench.autoscale import Experiment, paper_plan, plot, report

MB = 1_000_000


def timeline() -> Experiment:
    """Two nodes, five from t=50 to t=80, for 100 s; jobs as in the paper's schedule."""
    e = Experiment(t0=1000.0)
    for t in range(101):
        n = 5 if 50 <= t < 80 else 2
        e.samples.append({
            "t": 1000.0 + t, "nodes": {"dram": n}, "bandwidth": n * 100 * MB,
            "capacity": n * 128 << 20, "alloc_throughput": 300 * MB if 5 <= t < 30 else 0,
            "alloc_capacity": 0, "net": 150 * MB if 5 <= t < 30 else 0, "used": 0,
        })  # fmt: skip
    e.spans = [("sort-1", 5, 30), ("video", 40, 85), ("sort-2", 55, 80)]
    e.register_ms = [4.0, 1.0, 2.0]
    e.moved = {"sort-1": 1 << 30}
    return e


def test_node_seconds_against_static_peaks() -> None:
    e = timeline()
    used, static, peak = e.node_seconds()
    assert peak == 5
    assert used == pytest.approx(2 * 70 + 5 * 30)
    assert static == pytest.approx(5 * 100)
    alloc, moved, fleet = e.throughput_seconds()
    assert alloc == pytest.approx(300 * MB * 25)
    assert moved == pytest.approx(150 * MB * 25)
    assert fleet == pytest.approx(500 * MB * 100)


def test_report_states_the_ratios_and_the_declared_peak() -> None:
    e = timeline()
    text = report(e, paper_plan(100 * MB, 128 << 20), Path("x.png"), "cmd")
    assert "**ratio 0.58** (target <= 0.50)" in text  # 290 / 500
    # video and sort-2 run together: 600 MB/s declared, six 100 MB/s nodes.
    assert "declared peak (6 nodes" in text
    assert "2 -> 5 -> 2" in text
    assert "p50 2.0 ms" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    plot(timeline(), path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
