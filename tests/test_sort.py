"""The MapReduce sort through the session node, and a store that loses data."""

from __future__ import annotations

import uuid

import pytest

from pocketlib.control.processes import NodeProcess
from pocketlib.workloads.sort import PocketShuffle, run_sort

MiB = 1024 * 1024


def unique_job(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class DroppingShuffle(PocketShuffle):
    """A broken store: one partition comes back empty (its object is still freed)."""

    drop = "shuffle/m1/r2"

    def take(self, key: str) -> bytes:
        data = super().take(key)
        return b"" if key == self.drop else data


@pytest.mark.timeout(120)
def test_sort_through_the_node(node: NodeProcess) -> None:
    store = PocketShuffle([str(node.address)], job=unique_job("sort"))
    try:
        result = run_sort(store, total=4 * MiB, mappers=2, reducers=3)
        assert result.verified, result.problems
        assert result.problems == []
        assert result.total_bytes == 4 * MiB // 100 * 100
        assert result.shuffle_bytes == 2 * result.total_bytes
        assert result.peak_bytes is not None
        assert result.peak_bytes >= result.total_bytes
        # Every partition was read with delete-after-read: nothing is left behind.
        assert list(store.job.list()) == []
    finally:
        store.cleanup()


@pytest.mark.timeout(120)
def test_a_lost_partition_fails_verification(node: NodeProcess) -> None:
    store = DroppingShuffle([str(node.address)], job=unique_job("sort-broken"))
    try:
        try:
            result = run_sort(store, total=4 * MiB, mappers=2, reducers=3)
        except AssertionError:
            return  # a reducer noticed
        assert not result.verified
        assert result.problems
    finally:
        store.cleanup()
