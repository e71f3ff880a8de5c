"""The HDD tier: conformance, what survives a restart, kill -9 and a corrupted byte, bad paths."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest
from _helpers import wait_until

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import (
    CapacityError,
    ChecksumError,
    ConfigError,
    InvalidKeyError,
    NotFoundError,
)
from pocketlib.protocol import Flag, Op, checksum, encode_request
from pocketlib.testing.conformance import TierConformance
from pocketlib.tiers import TierDriver, available_drivers
from pocketlib.tiers.hdd import HEADER_SIZE, HddTier

KiB, MiB = 1024, 1024 * 1024

needs_registered_driver = pytest.mark.skipif(
    "hdd" not in available_drivers(), reason="hdd driver not registered"
)


def values(n: int, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"obj/{i:05d}": rng.randbytes(rng.choice((0, 10, 1000, 70_000))) for i in range(n)}


def object_files(path: Path) -> list[Path]:
    return sorted((path / "objects").iterdir())


def file_of(path: Path, job: str, key: str) -> Path:
    """The object file holding ``key`` (found by its header)."""
    for f in object_files(path):
        head = f.read_bytes()[:HEADER_SIZE]
        if job.encode() + key.encode() in head:
            return f
    raise AssertionError(f"no file holds {key!r}")


def flip_byte(f: Path, offset: int) -> None:
    with open(f, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


# -- conformance: the whole suite, once per write and read path -----------------------------------
class TestHddConformance(TierConformance):
    """Defaults: reservations in memory, small values read by pread, larger ones mapped."""

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made = 0

    def options(self) -> dict[str, int]:
        return {}

    def make_tier(self, capacity: int) -> TierDriver:
        self.made += 1
        return HddTier(capacity, str(self.tmp_path / f"tier-{self.made}"), **self.options())


class TestHddConformanceMapped(TestHddConformance):
    """No memory budget: every reservation is a mapped temporary file (the path of values
    larger than memory), joined by copy_file_range; every read mapped and hashed."""

    def options(self) -> dict[str, int]:
        return {"memory_budget": 0, "pread_max": 0}


class TestHddConformanceVerifyOnce(TestHddConformance):
    """Every read mapped, and values hashed on first read only (the large-value rule)."""

    def options(self) -> dict[str, int]:
        return {"pread_max": 0, "verify_max": 0}


# -- restart --------------------------------------------------------------------------------------
def test_a_reopened_tier_serves_what_it_held(tmp_path: Path) -> None:
    data = values(300)
    tier = HddTier(16 * MiB, str(tmp_path))
    for key, value in data.items():
        tier.put("job", key, value)
    tier.put("other", "k", b"x" * 5000, ttl=3600)
    tier.put("other", "gone-soon", b"y", ttl=0.001)
    tier.delete("job", "obj/00007")
    del data["obj/00007"]
    tier.put("job", "obj/00008", b"overwritten", flags=1)
    data["obj/00008"] = b"overwritten"
    time.sleep(0.01)
    tier.expire(time.time())
    before = tier.stats()
    metas = {key: tier.stat("job", key) for key in data}
    last_version = max(m.version for m in metas.values())
    tier.close()

    again = HddTier(16 * MiB, str(tmp_path))
    try:
        after = again.stats()
        assert (after.used, after.objects) == (before.used, before.objects)
        assert after.used_by_job == before.used_by_job
        assert after.objects_by_job == before.objects_by_job
        assert after.counters["recovered"] == before.objects
        assert after.counters["dropped_corrupt"] == 0
        for key, value in data.items():
            assert again.get("job", key) == value
            assert again.stat("job", key) == metas[key]  # size, checksums, flags, times
        assert again.stat("job", "obj/00008").flags == 1
        assert not again.exists("job", "obj/00007")
        assert not again.exists("other", "gone-soon")
        assert again.stat("other", "k").expires > 0  # the TTL survived too
        assert again.list("job")[0] == sorted(data)
        # Versions keep increasing across restarts (readers pin them).
        assert again.put("job", "new", b"1").version > last_version
    finally:
        again.close()


def test_versions_never_repeat_after_a_restart(tmp_path: Path) -> None:
    tier = HddTier(MiB, str(tmp_path))
    tier.put("job", "a", b"1")
    doomed = tier.put("job", "b", b"2").version
    tier.delete("job", "b")  # the highest version handed out is now in no file
    tier.close()  # writes nothing a killed process would not have written
    again = HddTier(MiB, str(tmp_path))
    try:
        assert again.put("job", "c", b"3").version > doomed
    finally:
        again.close()


def test_leftover_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    tier = HddTier(MiB, str(tmp_path), memory_budget=0)
    res = tier.reserve(10_000)  # a mapped temporary file
    res.fill(b"t" * 10_000)
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    tier.close()  # never committed, as if the node had died
    again = HddTier(MiB, str(tmp_path))
    try:
        assert list((tmp_path / "tmp").iterdir()) == []
        assert again.stats().counters["removed_temps"] == 1
        assert again.stats().used == 0
    finally:
        again.close()


def test_a_damaged_file_is_moved_aside_at_start(tmp_path: Path) -> None:
    tier = HddTier(MiB, str(tmp_path))
    tier.put("job", "good", b"g" * 1000)
    tier.put("job", "bad-value", b"v" * 1000)
    tier.put("job", "bad-header", b"h" * 1000)
    tier.put("job", "short", b"s" * 1000)
    tier.close()
    flip_byte(file_of(tmp_path, "job", "bad-value"), HEADER_SIZE + 500)
    flip_byte(file_of(tmp_path, "job", "bad-header"), 40)  # inside the size field
    short = file_of(tmp_path, "job", "short")
    os.truncate(short, HEADER_SIZE + 999)
    (tmp_path / "objects" / "stray").write_bytes(b"not an object")
    again = HddTier(MiB, str(tmp_path))
    try:
        assert again.list("job")[0] == ["good"]
        assert again.get("job", "good") == b"g" * 1000
        for key in ("bad-value", "bad-header", "short"):
            with pytest.raises(NotFoundError):
                again.get("job", key)
        stats = again.stats()
        assert stats.counters["dropped_corrupt"] == 4
        assert stats.objects == 1
        assert stats.used == again.charge_for(1000)
        assert len(list((tmp_path / "corrupt").iterdir())) == 4
    finally:
        again.close()
    third = HddTier(MiB, str(tmp_path))  # moved aside: not reported again
    try:
        assert third.stats().counters["dropped_corrupt"] == 0
    finally:
        third.close()


def test_name_collisions_keep_objects_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HddTier, "_name_base", staticmethod(lambda job, key: "same"))
    tier = HddTier(MiB, str(tmp_path))
    for i in range(5):
        tier.put("job", f"k{i}", f"value {i}".encode())
    assert sorted(f.name for f in object_files(tmp_path)) == [
        "same", "same.1", "same.2", "same.3", "same.4",
    ]  # fmt: skip
    tier.delete("job", "k0")
    tier.put("job", "k2", b"overwritten")  # a fresh name, then the old file is unlinked
    tier.put("job", "k5", b"takes the free name")
    assert tier.get("job", "k2") == b"overwritten"
    assert tier.get("job", "k5") == b"takes the free name"
    assert len(object_files(tmp_path)) == 5
    tier.close()
    again = HddTier(MiB, str(tmp_path))
    try:
        expected = {f"k{i}": f"value {i}".encode() for i in (1, 3, 4)}
        expected |= {"k2": b"overwritten", "k5": b"takes the free name"}
        assert {k: again.get("job", k) for k in again.list("job")[0]} == expected
        again.put("job", "k6", b"x")
        assert len(object_files(tmp_path)) == 6
    finally:
        again.close()


def test_a_crash_between_rename_and_unlink_keeps_the_newer_value(tmp_path: Path) -> None:
    tier = HddTier(MiB, str(tmp_path))
    tier.put("job", "k", b"old value")
    (old_file,) = object_files(tmp_path)
    saved = old_file.read_bytes()
    tier.put("job", "k", b"new value")
    tier.close()
    (tmp_path / "objects" / "left-by-a-crash").write_bytes(saved)  # as if never unlinked
    again = HddTier(MiB, str(tmp_path))
    try:
        assert again.get("job", "k") == b"new value"
        assert len(object_files(tmp_path)) == 1
        assert again.stats().objects == 1
        assert again.stats().used == again.charge_for(len(b"new value"))
    finally:
        again.close()


# -- corruption on the read path ------------------------------------------------------------------
@pytest.mark.parametrize("size", [1000, 300 * KiB, 2 * MiB])
def test_a_corrupted_byte_is_detected_and_never_served(tmp_path: Path, size: int) -> None:
    tier = HddTier(16 * MiB, str(tmp_path))
    try:
        value = random.Random(size).randbytes(size)
        for key in ("lease", "small", "take"):
            tier.put("job", key, value)
            assert tier.get("job", key) == value  # read (and verified) once before
            flip_byte(file_of(tmp_path, "job", key), HEADER_SIZE + size // 2)
        with pytest.raises(ChecksumError):
            tier.lease("job", "lease")
        if size <= 16 * KiB:
            with pytest.raises(ChecksumError):
                tier.read_small("job", "small", 16 * KiB)
            with pytest.raises(ChecksumError):
                tier.read_small("job", "take", 16 * KiB, take=True)
        else:
            with pytest.raises(ChecksumError):
                tier.get("job", "small")
            with pytest.raises(ChecksumError):
                tier.lease("job", "take", take=True)
        for key in ("lease", "small", "take"):  # never served afterwards either
            assert not tier.exists("job", key)
        stats = tier.stats()
        assert stats.counters["checksum_errors"] == 3
        assert (stats.objects, stats.used) == (0, 0)
        assert len(list((tmp_path / "corrupt").iterdir())) == 2  # the taken one is gone
    finally:
        tier.close()


def test_a_large_value_is_rehashed_when_its_file_changes(tmp_path: Path) -> None:
    tier = HddTier(16 * MiB, str(tmp_path), verify_max=0, pread_max=0)
    try:
        value = random.Random(3).randbytes(MiB)
        tier.put("job", "k", value)
        f = file_of(tmp_path, "job", "k")
        old = time.time() - 10
        os.utime(f, (old, old))
        assert tier.get("job", "k") == value
        assert tier.get("job", "k") == value  # the second read does not hash
        flip_byte(f, HEADER_SIZE + 12345)
        os.utime(f, (old, old))  # mtime restored: the ctime still moved
        with pytest.raises(ChecksumError):
            tier.get("job", "k")
    finally:
        tier.close()


# -- leases, writes -------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"memory_budget": 0, "pread_max": 0}])
def test_a_lease_outlives_delete_and_overwrite_of_its_file(
    tmp_path: Path, options: dict[str, int]
) -> None:
    tier = HddTier(64 * MiB, str(tmp_path), **options)
    try:
        old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
        tier.put("job", "k", old)
        lease = tier.lease("job", "k")
        tier.put("job", "k", new)
        taken = tier.lease("job", "k", take=True)
        assert len(object_files(tmp_path)) == 0  # both files unlinked, both still readable
        assert lease.tobytes() == old
        assert taken.tobytes() == new
        lease.release()
        taken.release()
        assert tier.stats().used == 0
    finally:
        tier.close()


def test_a_streamed_value_is_joined_into_one_file(tmp_path: Path) -> None:
    # A budget of 6 MiB: the first parts are in memory, the rest mapped temporary files.
    tier = HddTier(64 * MiB, str(tmp_path), memory_budget=6 * MiB, buffer_max=2 * MiB)
    try:
        chunks = [os.urandom(2 * MiB) for _ in range(8)] + [b"tail"]
        parts = []
        for chunk in chunks:
            res = tier.reserve(len(chunk))
            res.fill(chunk)
            parts.append(res)
        assert len(list((tmp_path / "tmp").iterdir())) == 6  # 3 parts fit in memory
        whole = b"".join(chunks)
        joined = tier.join(parts)
        # Joined in join (the node calls it outside its lock): one file, read-only buffers.
        assert len(list((tmp_path / "tmp").iterdir())) == 1
        assert b"".join(bytes(b) for b in joined.buffers) == whole
        assert all(b.readonly for b in joined.buffers)
        meta = tier.commit(joined, "job", "big", checksum=checksum(whole))
        assert list((tmp_path / "tmp").iterdir()) == []
        (f,) = object_files(tmp_path)
        assert f.stat().st_size == HEADER_SIZE + len(whole)
        assert tier.get("job", "big") == whole
        assert meta.checksum == checksum(whole)
        assert tier.stats().used == sum(p.charged for p in parts)
        # A streamed put whose first chunk was mapped: that file becomes the object.
        tier.delete("job", "big")
        parts = []
        for chunk in chunks[:3]:
            res = tier.reserve(len(chunk))
            res.fill(chunk)
            parts.append(res)
        tier.commit(tier.join(parts), "job", "again", checksum=0)
        assert tier.get("job", "again") == b"".join(chunks[:3])
    finally:
        tier.close()


def test_a_join_that_fails_is_reported_by_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tier = HddTier(64 * MiB, str(tmp_path), memory_budget=0)
    try:
        parts = [tier.reserve(MiB) for _ in range(3)]
        for res in parts:
            res.fill(b"p" * MiB)

        def disk_full(*args: object) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "copy_file_range", disk_full)
        joined = tier.join(parts)  # no exception here: the node would not answer it
        monkeypatch.undo()
        with pytest.raises(CapacityError, match="full"):
            tier.commit(joined, "job", "k", checksum=0)
        assert tier.stats().used == 0
        assert list((tmp_path / "tmp").iterdir()) == []
        assert not tier.exists("job", "k")
        tier.abort(joined)  # already given back: a no-op
        assert tier.stats().used == 0
    finally:
        tier.close()


def test_a_reservation_larger_than_the_memory_budget_is_a_mapped_file(tmp_path: Path) -> None:
    tier = HddTier(64 * MiB, str(tmp_path), memory_budget=MiB)
    try:
        small = tier.reserve(512 * KiB)  # in memory
        big = tier.reserve(4 * MiB)  # would exceed the budget: a file, preallocated
        (temp,) = (tmp_path / "tmp").iterdir()
        assert temp.stat().st_size == HEADER_SIZE + 4 * MiB
        assert temp.stat().st_blocks * 512 >= 4 * MiB
        value = os.urandom(4 * MiB)
        big.fill(value)
        tier.commit(big, "job", "big", checksum=checksum(value))
        tier.abort(small)
        assert tier.get("job", "big") == value
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        tier.close()


def test_large_reservations_are_mapped_files_small_ones_buffers(tmp_path: Path) -> None:
    tier = HddTier(64 * MiB, str(tmp_path))  # defaults: buffers of up to 16 MiB
    try:
        small = tier.reserve(16 * MiB)
        assert list((tmp_path / "tmp").iterdir()) == []
        large = tier.reserve(16 * MiB + 1)
        assert len(list((tmp_path / "tmp").iterdir())) == 1
        for res in (small, large):
            value = os.urandom(res.size)
            res.fill(value)
            tier.commit(res, "job", str(res.size), checksum=checksum(value))
            assert tier.get("job", str(res.size)) == value
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        tier.close()


def test_sync_mode_round_trips(tmp_path: Path) -> None:
    tier = HddTier(16 * MiB, str(tmp_path), sync=True, memory_budget=MiB)
    try:
        tier.put("job", "small", b"s" * 100)
        value = os.urandom(2 * MiB)
        res = tier.reserve(len(value))
        res.fill(value)
        tier.commit(res, "job", "big", checksum=checksum(value))
        assert tier.get("job", "small") == b"s" * 100
        assert tier.get("job", "big") == value
    finally:
        tier.close()


def test_keys_too_long_for_a_header_are_refused(tmp_path: Path) -> None:
    tier = HddTier(MiB, str(tmp_path))
    try:
        with pytest.raises(InvalidKeyError):
            tier.put("job", "k" * HEADER_SIZE, b"x")
        res = tier.reserve(10)
        with pytest.raises(InvalidKeyError):
            tier.commit(res, "job", "k" * HEADER_SIZE, checksum=0)
        assert tier.stats().used == 0
    finally:
        tier.close()


# -- bad input ------------------------------------------------------------------------------------
def test_a_missing_directory_is_created_but_not_a_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        HddTier.from_options(MiB, str(tmp_path / "unmounted" / "hdd"))
    path = tmp_path / "c"
    tier = HddTier.from_options(MiB, str(path))
    try:
        assert {p.name for p in path.iterdir()} >= {"objects", "tmp", "corrupt", "lock"}
        tier.put("job", "k", b"v")
        assert tier.get("job", "k") == b"v"
    finally:
        tier.close()


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--path"):
        HddTier.from_options(MiB, None)
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    # Running as root makes chmod ineffective: a directory under a regular file cannot exist.
    with pytest.raises(ConfigError, match="cannot use"):
        HddTier(MiB, str(a_file / "sub"))
    with pytest.raises(ConfigError, match="cannot use"):
        HddTier(MiB, str(a_file))
    with pytest.raises(ConfigError, match="above zero"):
        HddTier(0, str(tmp_path / "zero"))
    st = os.statvfs(tmp_path)
    too_big = st.f_bavail * st.f_frsize + (1 << 40)
    with pytest.raises(ConfigError, match="too few"):
        HddTier(too_big, str(tmp_path / "huge"))
    assert not (tmp_path / "huge").exists()  # refused before anything was made
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="too few"):
        HddTier(too_big, str(tmp_path / "exists"))
    first = HddTier(MiB, str(tmp_path / "shared"))
    try:
        with pytest.raises(ConfigError, match="in use"):
            HddTier(MiB, str(tmp_path / "shared"))
    finally:
        first.close()
    HddTier(MiB, str(tmp_path / "shared")).close()  # free again once closed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory anyway")
def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="cannot use"):
            HddTier(MiB, str(path))
    finally:
        path.chmod(0o700)


def test_a_full_tier_refuses_and_keeps_what_it_holds(tmp_path: Path) -> None:
    tier = HddTier(HddTier.charge_for(1000) * 3, str(tmp_path))
    try:
        for i in range(3):
            tier.put("job", f"k{i}", b"x" * 1000)
        with pytest.raises(CapacityError):
            tier.put("job", "k3", b"x")
        with pytest.raises(CapacityError):
            tier.reserve(1)
        assert len(object_files(tmp_path)) == 3
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        tier.close()


# -- a real node, killed --------------------------------------------------------------------------
@pytest.fixture
def hdd_dir(tmp_path: Path) -> Path:
    return tmp_path / "hdd"


@needs_registered_driver
def test_kill_9_mid_write_keeps_every_acknowledged_put(hdd_dir: Path) -> None:
    """A real node, killed with SIGKILL while a put and a streamed put are half sent: on
    restart over the same directory every acknowledged object is served with matching bytes
    (the client checks each checksum), the half-written ones are absent, no temporary is left."""
    data = values(200, seed=7)
    args = ["--path", str(hdd_dir)]
    node = NodeProcess("hdd", "256MiB", extra_args=args)
    try:
        with pocketlib.connect([str(node.address)], job="crash") as job:
            job.put_many(dict(list(data.items())[:100]))
            for key, value in list(data.items())[100:]:
                job.put(key, value)
            token = job._tokens[str(node.address)]
            raw = socket.create_connection((node.address.host, node.address.port))
            head = encode_request(Op.PUT, 1, b"crash", token, b"half", length=8 * MiB)
            raw.sendall(head + b"h" * (2 * MiB))
            # And a streamed put of 20 chunks of 4 MiB, cut off after 18: more than the
            # tier's memory budget, so some chunks are temporary files when the node dies.
            streamed = socket.create_connection((node.address.host, node.address.port))
            chunk = b"s" * (4 * MiB)
            for i in range(18):
                head = encode_request(
                    Op.STREAM_PUT, 2, b"crash", token, b"streamed", flags=Flag.MORE,
                    offset=i * len(chunk), length=len(chunk), value_checksum=checksum(chunk),
                )  # fmt: skip
                streamed.sendall(head + chunk)
            wait_until(
                lambda: job.stats()[str(node.address)]["tier"]["used"] > (8 + 18 * 4) * MiB,
                what="the half-written values' reservations",
            )
            assert list((hdd_dir / "tmp").iterdir()), "no chunk went to a temporary file"
            node.kill()
            raw.close()
            streamed.close()
    finally:
        node.stop()
    node = NodeProcess("hdd", "256MiB", extra_args=args)
    try:
        assert list((hdd_dir / "tmp").iterdir()) == []
        with pocketlib.connect([str(node.address)], job="crash") as job:
            assert sorted(job.list()) == sorted(data)
            assert job.get_many(list(data)) == data
            for key, value in list(data.items())[:20]:
                assert job.get(key) == value
            assert not job.exists("half")
            assert not job.exists("streamed")
            tier = job.stats()[str(node.address)]["tier"]
            assert tier["counters"]["recovered"] == len(data)
            assert tier["counters"]["dropped_corrupt"] == 0
            assert tier["counters"]["removed_temps"] >= 1
            assert tier["used"] == sum(HddTier.charge_for(len(v)) for v in data.values())
    finally:
        node.stop()


@needs_registered_driver
def test_a_node_refuses_a_corrupted_value(hdd_dir: Path) -> None:
    args = ["--path", str(hdd_dir)]
    with (
        NodeProcess("hdd", "64MiB", extra_args=args) as node,
        pocketlib.connect([str(node.address)], job="c") as job,
    ):
        job.put("small", b"v" * 1000)
        job.put("large", os.urandom(3 * MiB))
        for key, size in (("small", 1000), ("large", 3 * MiB)):
            flip_byte(file_of(hdd_dir, "c", key), HEADER_SIZE + size - 1)
            with pytest.raises(ChecksumError):
                job.get(key)
            assert not job.exists(key)


@needs_registered_driver
def test_a_node_streams_a_large_value_through_a_file(hdd_dir: Path) -> None:
    args = ["--path", str(hdd_dir)]
    value = os.urandom(100 * MiB + 123)  # beyond the default memory budget
    with (
        NodeProcess("hdd", "256MiB", extra_args=args) as node,
        pocketlib.connect([str(node.address)], job="s") as job,
    ):
        with job.writer("big") as w:
            w.write(value)
        assert job.get("big") == value
        with job.reader("big") as r:
            assert r.read() == value
        assert list((hdd_dir / "tmp").iterdir()) == []
        (f,) = object_files(hdd_dir)
        assert f.stat().st_size == HEADER_SIZE + len(value)
