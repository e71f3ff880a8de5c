"""The options of ``pocket bench`` and the constants of its four parts.

Light on purpose: ``pocket`` builds its parser from :func:`add_options` on every start, so this
module imports nothing beyond the standard library and :mod:`pocketlib.config`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config import format_size, parse_size

__all__ = ["DESCRIPTION", "Settings", "add_options", "command_argv", "parse_args", "size_label"]

DESCRIPTION = "Data-plane benchmark: pocketlib next to a real redis-server, in the same run."

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
LATENCY_SIZES = (1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB)
GET_INTO_SIZES = (1 * MiB, 16 * MiB)
AGG_SIZES = (1 * MiB, 16 * MiB)
AGG_CLIENTS = (1, 4, 8)
SYSTEMS = ("pocket", "redis")
JOB = "bench"

# Part d (tiers): value sizes of the per-tier table, the co-located value, the recovery test.
TIER_SIZES = (1 * KiB, 16 * MiB)
COLO_SIZE = 16 * MiB
RECOVERY_OBJECTS = 10_000
#: Capacity of the file-backed nodes of part d (nvme preallocates it; hdd checks it is free).
FILE_TIER_CAPACITY = 1 * GiB
#: How expensive one operation is on each kind of system of part d: sets the batch sizes.
TIER_COST = {"fast": ("dram", "nvme", "redis"), "disk": ("hdd",), "s3": ("s3", "raw s3")}


def size_label(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return format_size(n)


@dataclass
class Settings:
    quick: bool
    rounds: int
    agg_rounds: int
    duration: float
    sort_size: int
    sort_runs: int
    mappers: int
    reducers: int
    capacity: int
    parts: str
    out: Path | None

    def ops_per_round(self, size: int) -> int:
        """Operations of one batch: about the same bytes per batch at large sizes."""
        if self.quick:
            table = {1 * KiB: 200, 64 * KiB: 100, 1 * MiB: 30, 16 * MiB: 4}
        else:
            table = {1 * KiB: 1000, 64 * KiB: 400, 1 * MiB: 150, 16 * MiB: 24}
        return table.get(size, 50)

    def tier_ops(self, system: str, size: int) -> int:
        """Part d: operations of one batch on ``system`` (slow systems get smaller batches)."""
        cost = next((c for c, names in TIER_COST.items() if system in names), "fast")
        table = {
            # cost: (1 KiB full, 16 MiB full, 1 KiB quick, 16 MiB quick)
            "fast": (500, 16, 100, 4),
            "disk": (100, 8, 30, 3),
            "s3": (40, 3, 10, 2),
        }[cost]
        big = size >= 1 * MiB
        return table[(2 if self.quick else 0) + (1 if big else 0)]

    @property
    def colo_ops(self) -> int:
        """Part d: 16 MiB operations per batch of the co-located comparison."""
        return 8 if self.quick else 30

    @property
    def recovery_runs(self) -> int:
        """Part d: restarts after kill -9 (and empty starts) per tier."""
        return 1 if self.quick else 3

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Settings:
        """Settings from parsed options, the defaults of the chosen mode filled in."""
        quick = bool(a.quick)
        sort_size = parse_size(a.sort_size) if a.sort_size else (64 * MiB if quick else 1 * GiB)
        return cls(
            quick=quick,
            rounds=a.rounds or (2 if quick else 6),
            agg_rounds=a.agg_rounds or (1 if quick else 2),
            duration=a.duration or (1.0 if quick else 3.0),
            sort_size=sort_size,
            sort_runs=max(1, a.sort_runs or (1 if quick else 3)),
            mappers=a.mappers,
            reducers=a.reducers,
            capacity=max(parse_size(a.capacity), 3 * sort_size),
            parts=a.parts,
            out=a.out,
        )


def add_options(p: argparse.ArgumentParser) -> None:
    """The benchmark's options, added to ``p``."""
    p.add_argument("--quick", action="store_true", help="smoke run: fewer ops, 64MiB sort")
    p.add_argument("--rounds", type=int, help="latency rounds (default 6, quick 2)")
    p.add_argument("--agg-rounds", type=int, help="rounds per aggregate case (default 2, quick 1)")
    p.add_argument("--duration", type=float, help="seconds per aggregate run (default 3, quick 1)")
    p.add_argument("--sort-size", help="bytes to sort (default 1GiB, quick 64MiB)")
    p.add_argument("--sort-runs", type=int, help="sorts per system (default 3, quick 1)")
    p.add_argument("--mappers", type=int, default=8)
    p.add_argument("--reducers", type=int, default=8)
    p.add_argument("--capacity", default="4GiB", help="pocket node capacity (default 4GiB)")
    p.add_argument(
        "--parts",
        default="abc",
        help="which parts to run: any of a, b, c, d (default abc; d, the tiers, runs only "
        "when asked: --parts abcd)",
    )
    p.add_argument(
        "--out", type=Path, help="report path (default benchmarks/results/dataplane-<date>.md)"
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_options(p)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def command_argv(a: argparse.Namespace) -> list[str]:
    """The benchmark's options in ``a`` as arguments, those left at their default omitted."""
    defaults = vars(parse_args([]))
    out: list[str] = []
    for dest, value in vars(a).items():
        if dest not in defaults or value == defaults[dest]:
            continue
        flag = "--" + dest.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out
