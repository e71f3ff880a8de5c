"""Helpers shared by the test modules."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import pocketlib


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def node_stats(job: pocketlib.Job) -> dict[str, Any]:
    """The STATS of the one node ``job`` is on."""
    (stats,) = job.stats().values()
    return stats


def tier_stats(job: pocketlib.Job) -> dict[str, Any]:
    """The tier accounting of the one node ``job`` is on."""
    tier: dict[str, Any] = node_stats(job)["tier"]
    return tier


def pocket_command() -> list[str]:
    """The installed ``pocket`` script beside this interpreter, else ``python -m``."""
    script = os.path.join(os.path.dirname(sys.executable), "pocket")
    if os.path.exists(script):
        return [script]
    found = shutil.which("pocket")
    return [found] if found else [sys.executable, "-m", "pocketlib.cli"]


def grow(controller: Any, job_id: str) -> None:
    """A job on one node grows onto another node of the cluster (as a hot tier makes it): a
    new weight-map version, not yet handed out."""
    with controller.lock:
        record = controller.jobs[job_id]
        (a,) = record.alloc
        b = next(n for n in controller.nodes if n not in record.alloc)
        record.alloc[b] = record.alloc[a]
        controller._new_map(record)
