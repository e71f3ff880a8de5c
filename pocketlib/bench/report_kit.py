"""The pieces every section of the ``pocket bench`` report is built from: a markdown table, a
ratio, a latency figure, the sort table's rows, and :class:`Target`, one checked target line."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import format_size
from ..workloads.sort import SortResult

__all__ = ["Target", "fmt_us", "md_table", "ratio_of", "sort_rows"]


def ratio_of(a: float, b: float) -> float:
    return a / b if b else float("nan")


def md_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":--" if c == "l" else "--:" for c in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def fmt_us(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


@dataclass
class Target:
    """One target line. ``unit`` "x" is a ratio; any other unit is a count (``exact``: the
    value must equal the limit)."""

    text: str
    value: float
    limit: float
    higher_is_better: bool
    detail: str
    unit: str = "x"
    exact: bool = False

    @property
    def passed(self) -> bool:
        if self.exact:
            return self.value == self.limit
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        """The report's line: verdict, what, the value, what was wanted and the figures."""
        op = "=" if self.exact else (">=" if self.higher_is_better else "<=")
        if self.unit == "x":
            value, want = f"{self.value:.3f}x", f"{op} {self.limit:g}x"
        else:
            value, want = f"{self.value:,.0f}{self.unit}", f"{op} {self.limit:,.0f}{self.unit}"
        verdict = "PASS" if self.passed else "MISS"
        return f"- {verdict}: {self.text}: {value} (want {want}; {self.detail})"


def sort_rows(sorts: list[SortResult]) -> list[list[str]]:
    return [
        [
            r.store, f"{r.seconds:.2f}", f"{r.map_seconds:.2f}", f"{r.reduce_seconds:.2f}",
            format_size(r.shuffle_bytes), f"{r.shuffle_seconds:.2f}",
            f"{r.shuffle_gbps:.2f}",
            format_size(r.peak_bytes) if r.peak_bytes is not None else "n/a",
            "yes" if r.verified else "NO: " + "; ".join(r.problems),
        ]
        for r in sorts
    ]  # fmt: skip
