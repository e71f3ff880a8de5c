"""The setting part d of ``pocket bench`` runs its measurements in: environment variables set
around a child or a client, job handles with the co-located path on or off, temporary
directories for file-backed tiers, and the record of a measurement that failed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

from ..client.client import Job, connect
from .measure import log
from .settings import GiB
from .tier_results import TierResults

__all__ = ["connect_job", "environment", "record_failure", "temp_dir"]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (child processes started inside inherit
    them), then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect_job(address: str, job: str, *, shared: bool) -> Job:
    """A job handle whose client uses the co-located path (``shared``) or only TCP.

    The client decides once per node, at its first request that needs the arena, from
    ``POCKET_SHARED_MEMORY``: the variable is set around that first probe.
    """
    with environment({"POCKET_SHARED_MEMORY": "1" if shared else "0"}):
        handle = connect([address], job=job)
        for node in handle.client.pools:
            handle.client.arena(node)
    return handle


def temp_dir(tier: str, need: int, notes: list[str]) -> str | None:
    """A fresh directory under the temporary directory for a file-backed tier of ``need``
    bytes, or None (and a note) if the file system has not that much free with room to
    spare."""
    parent = tempfile.gettempdir()
    free = shutil.disk_usage(parent).free
    if free < need + 1 * GiB:
        notes.append(f"{tier}: skipped, {parent} has {free / GiB:.1f} GiB free, "
                     f"needs {need / GiB:.1f} GiB + 1 GiB spare")  # fmt: skip
        return None
    return tempfile.mkdtemp(prefix=f"pocket-bench-{tier}-", dir=parent)


def record_failure(res: TierResults, what: str, exc: BaseException) -> None:
    """Record that ``what`` raised: logged, and listed in the report (the run exits 1)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    why = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    if len(lines) > 1:
        why += f" (first line: {lines[0]})"
    log(f"{what}: FAILED: {why}")
    res.failures.append(f"{what}: {why}")
