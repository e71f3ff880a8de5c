"""The NVMe tier: what survives a restart, a torn journal, a corrupted byte and kill -9."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from _helpers import wait_until

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import ConfigError, NotFoundError
from pocketlib.protocol import Op, encode_request
from pocketlib.tiers.nvme import NvmeTier

KiB, MiB = 1024, 1024 * 1024


def values(n: int, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"obj/{i:05d}": rng.randbytes(rng.choice((0, 10, 1000, 70_000))) for i in range(n)}


def test_a_reopened_tier_serves_what_it_held(tmp_path: Path) -> None:
    data = values(300)
    tier = NvmeTier(16 * MiB, str(tmp_path))
    for key, value in data.items():
        tier.put("job", key, value)
    tier.put("other", "k", b"x" * 5000, ttl=3600)
    tier.delete("job", "obj/00007")
    del data["obj/00007"]
    tier.put("job", "obj/00008", b"overwritten")
    data["obj/00008"] = b"overwritten"
    before = tier.stats()
    last_version = tier.stat("job", "obj/00008").version
    tier.close()

    again = NvmeTier(16 * MiB, str(tmp_path))
    try:
        after = again.stats()
        assert (after.used, after.objects) == (before.used, before.objects)
        assert after.used_by_job == before.used_by_job
        assert after.counters["recovered"] == before.objects
        for key, value in data.items():
            assert again.get("job", key) == value
        assert not again.exists("job", "obj/00007")
        assert again.stat("other", "k").expires > 0  # the TTL survived too
        # Versions keep increasing across restarts (readers pin them).
        assert again.put("job", "new", b"1").version > last_version
        # The rebuilt allocator hands out only free space: new values overwrite nothing.
        for i in range(50):
            again.put("job", f"more/{i}", bytes([i]) * 3000)
        for key, value in data.items():
            assert again.get("job", key) == value
    finally:
        again.close()


def test_a_torn_journal_tail_is_cut_off(tmp_path: Path) -> None:
    tier = NvmeTier(4 * MiB, str(tmp_path))
    tier.put("job", "a", b"alpha")
    tier.put("job", "b", b"beta")
    tier.close()
    with open(tmp_path / "journal", "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage-from-a-crash")  # a record header, then nothing valid
    again = NvmeTier(4 * MiB, str(tmp_path))
    try:
        assert again.get("job", "a") == b"alpha"
        assert again.get("job", "b") == b"beta"
        again.put("job", "c", b"gamma")  # appended after the cut, so replayable
    finally:
        again.close()
    third = NvmeTier(4 * MiB, str(tmp_path))
    try:
        assert sorted(third.list("job")[0]) == ["a", "b", "c"]
    finally:
        third.close()


def test_a_corrupted_byte_is_detected_and_never_served(tmp_path: Path) -> None:
    tier = NvmeTier(4 * MiB, str(tmp_path))
    tier.put("job", "good", b"g" * 1000)
    meta = tier.put("job", "bad", b"b" * 1000)
    with tier.lease("job", "bad") as lease:
        # Find where the value lives in the data file by its bytes.
        offset = bytes(tier._ro_view).find(bytes(lease.buffers[0]))
    assert meta.size == 1000
    assert offset >= 0
    tier.close()
    with open(tmp_path / "data", "r+b") as f:
        f.seek(offset + 500)
        f.write(b"X")
    again = NvmeTier(4 * MiB, str(tmp_path))
    try:
        assert again.get("job", "good") == b"g" * 1000
        with pytest.raises(NotFoundError):
            again.get("job", "bad")
        assert again.stats().counters["dropped_corrupt"] == 1
    finally:
        again.close()
    # The drop was recorded: the object stays gone on the next start, and is not re-reported.
    third = NvmeTier(4 * MiB, str(tmp_path))
    try:
        assert not third.exists("job", "bad")
        assert third.stats().counters["dropped_corrupt"] == 0
    finally:
        third.close()


def test_the_journal_is_compacted_and_stays_correct(tmp_path: Path) -> None:
    tier = NvmeTier(4 * MiB, str(tmp_path))
    for i in range(12_000):  # overwrites of a few keys: records pile up, live objects do not
        tier.put("job", f"k{i % 10}", i.to_bytes(4, "little"))
    records = tier.stats().counters["journal_records"]
    assert records < 2 * 10 + 4096 + 2, f"journal never compacted ({records} records)"
    tier.close()
    again = NvmeTier(4 * MiB, str(tmp_path))
    try:
        for j in range(10):
            last = max(i for i in range(12_000) if i % 10 == j)
            assert again.get("job", f"k{j}") == last.to_bytes(4, "little")
    finally:
        again.close()


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot use"):
        NvmeTier(MiB, str(a_file / "sub"))  # a directory cannot be made under a file
    with pytest.raises(ConfigError, match="cannot use"):
        NvmeTier(MiB, str(tmp_path / "unmounted" / "nvme"))  # the parent is missing
    fresh = NvmeTier(MiB, str(tmp_path / "new"))  # only the directory itself: made
    fresh.close()
    st = os.statvfs(tmp_path)
    too_big = st.f_bavail * st.f_frsize + (1 << 30)
    with pytest.raises(ConfigError, match="too few"):  # refused before anything is allocated
        NvmeTier(too_big, str(tmp_path / "huge"))
    assert not (tmp_path / "huge" / "data").exists()
    with pytest.raises(ConfigError, match="--path"):
        NvmeTier.from_options(MiB, None)
    first = NvmeTier(MiB, str(tmp_path / "shared"))
    try:
        with pytest.raises(ConfigError, match="in use"):
            NvmeTier(MiB, str(tmp_path / "shared"))
    finally:
        first.close()


def test_kill_9_mid_write_keeps_every_acknowledged_put(tmp_path: Path) -> None:
    """A real node, killed with SIGKILL while a put is half sent: on restart over the same
    directory every acknowledged object is served with its checksum verified (the client
    checks it on every read), and the half-written one is not."""
    data = values(200, seed=7)
    args = ["--path", str(tmp_path)]
    node = NodeProcess("nvme", "64MiB", extra_args=args)
    try:
        with pocketlib.connect([str(node.address)], job="crash") as job:
            job.put_many(dict(list(data.items())[:100]))
            for key, value in list(data.items())[100:]:
                job.put(key, value)
            token = job._tokens[str(node.address)]
            raw = socket.create_connection((node.address.host, node.address.port))
            head = encode_request(Op.PUT, 1, b"crash", token, b"half", length=8 * MiB)
            raw.sendall(head + b"h" * (2 * MiB))
            wait_until(
                lambda: job.stats()[str(node.address)]["tier"]["used"] > 8 * MiB,
                what="the half-written value's reservation",
            )
            node.kill()
            raw.close()
    finally:
        node.stop()
    node = NodeProcess("nvme", "64MiB", extra_args=args)
    try:
        with pocketlib.connect([str(node.address)], job="crash") as job:
            assert sorted(job.list()) == sorted(data)
            assert job.get_many(list(data)) == data
            assert not job.exists("half")
            tier = job.stats()[str(node.address)]["tier"]
            assert tier["counters"]["recovered"] == len(data)
            assert tier["counters"]["dropped_corrupt"] == 0
    finally:
        node.stop()
