"""Persist after job: put(..., persist=True) writes through, and the object outlives purge()."""

from __future__ import annotations

from pathlib import Path

import pytest

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import CapacityError, NotFoundError, RequestError
from pocketlib.protocol import Flag
from pocketlib.tiers.dram import DramTier
from pocketlib.tiers.nvme import NvmeTier
from pocketlib.tiers.persist import PersistingTier

MiB = 1024 * 1024


def test_persisted_objects_outlive_the_job(tmp_path: Path) -> None:
    args = ["--persist", f"nvme:64MiB:{tmp_path}"]
    with NodeProcess("dram", "64MiB", extra_args=args) as node:
        with pocketlib.connect([str(node.address)], job="report") as job:
            job.put("result", b"keep me", persist=True)
            job.put("big-result", b"R" * (3 * MiB), persist=True)
            job.put("scratch", b"temporary")
            assert job.get("result") == b"keep me"
            assert job.purge() == 3  # the job's data on the fast tier is freed...
        with pocketlib.connect([str(node.address)], job="report") as job:
            assert job.get("result") == b"keep me"  # ...but the persisted objects remain
            assert job.get("big-result") == b"R" * (3 * MiB)
            with pytest.raises(NotFoundError):
                job.get("scratch")
            assert sorted(job.list()) == ["big-result", "result"]
            assert job.delete("result")  # deleting a key deletes it everywhere
            assert not job.exists("result")
    # The persist tier is persistent: a new node over it still has the object.
    with (
        NodeProcess("dram", "64MiB", extra_args=args) as node,
        pocketlib.connect([str(node.address)], job="report") as job,
    ):
        assert job.get("big-result") == b"R" * (3 * MiB)
        assert not job.exists("result")


def test_a_node_without_a_persist_tier_refuses_persist(node: NodeProcess) -> None:
    with pocketlib.connect([str(node.address)], job="no-persist") as job:
        with pytest.raises(RequestError, match="no persist tier"):
            job.put("k", b"v" * 100_000, persist=True)
        with pytest.raises(RequestError, match="no persist tier"):
            job.put_many({"a": b"1"}, persist=True)
        assert not job.exists("k")
        job.put("k", b"fine")  # the connection is still in step
        assert job.get("k") == b"fine"
        job.purge()


def test_a_failed_write_through_fails_the_put(tmp_path: Path) -> None:
    tier = PersistingTier(DramTier(8 * MiB, shared=False), NvmeTier(MiB, str(tmp_path)))
    try:
        with pytest.raises(CapacityError):
            tier.put("job", "k", b"x" * (2 * MiB), flags=Flag.PERSIST)
        assert not tier.exists("job", "k"), "a put that was not persisted must not be stored"
        tier.put("job", "k", b"x" * (2 * MiB))  # without persist it fits the fast tier
        assert tier.get("job", "k") == b"x" * (2 * MiB)
        assert tier.stats().counters["persist.objects"] == 0
    finally:
        tier.close()
