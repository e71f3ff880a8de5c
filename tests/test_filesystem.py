"""``pocket://``: fsspec's own conformance suite, unmodified, and the pocket-specific parts."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import fsspec
import fsspec.tests.abstract as abstract
import pytest

import pocketlib
from pocketlib import JobHints, LocalCluster
from pocketlib.filesystem import PocketFileSystem


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    cluster = LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2)
    with cluster, cluster.client() as client:
        j = client.register_job("fsjob", JobHints(capacity="32MiB"))
        yield j
        j.deregister()


class PocketFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, job: pocketlib.Job) -> PocketFileSystem:  # type: ignore[override]
        return fsspec.filesystem("pocket", ticket=job.ticket.to_json())

    @pytest.fixture
    def fs_path(self) -> str:  # type: ignore[override]
        return "fsjob/root"

    @pytest.fixture
    def fs_join(self):  # type: ignore[no-untyped-def]
        return lambda *parts: "/".join(parts)


class TestPocketCopy(abstract.AbstractCopyTests, PocketFixtures):
    pass


class TestPocketGet(abstract.AbstractGetTests, PocketFixtures):
    pass


class TestPocketPut(abstract.AbstractPutTests, PocketFixtures):
    pass


class TestPocketPipe(abstract.AbstractPipeTests, PocketFixtures):
    pass


class TestPocketOpen(abstract.AbstractOpenTests, PocketFixtures):
    pass


# -- what is pocket's own ------------------------------------------------------------------------


@pytest.fixture
def fs(job: pocketlib.Job) -> PocketFileSystem:
    return fsspec.filesystem("pocket", ticket=job.ticket.to_json())


def test_urls_name_the_job_and_bad_ones_say_so(fs: PocketFileSystem) -> None:
    fs.pipe("pocket://fsjob/a/b.txt", b"hello")
    assert fs.cat("pocket://fsjob/a/b.txt") == b"hello"
    assert fs.cat(f"pocket://{fs.job.ticket.job}/a/b.txt") == b"hello"  # by the job's id too
    with pytest.raises(FileNotFoundError, match="names a job"):
        fs.cat("pocket:///a/b.txt")
    with pytest.raises(FileNotFoundError, match="serves job 'fsjob', not 'other'"):
        fs.cat("pocket://other/a/b.txt")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("pocket://fsjob/a")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("pocket://fsjob/nothing-here")
    with pytest.raises(pocketlib.ConfigError, match="ticket"):
        PocketFileSystem(skip_instance_cache=True)


def test_files_read_ranges_write_atomically_and_refuse_append(fs: PocketFileSystem) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    with fs.open("fsjob/f/big", "wb", block_size=64 * 1024) as f:
        for i in range(0, len(data), 100_000):
            f.write(data[i : i + 100_000])
            assert not fs.exists("fsjob/f/big")  # visible only once closed
    with fs.open("fsjob/f/big", "rb") as f:
        f.seek(500_000)
        assert f.read(10) == data[500_000:500_010]
    assert fs.cat_ranges(["fsjob/f/big"] * 2, [0, -4], [4, None]) == [data[:4], data[-4:]]

    def failing_writer() -> None:
        with fs.open("fsjob/f/broken", "wb") as f:
            f.write(b"half")
            raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        failing_writer()
    assert not fs.exists("fsjob/f/broken")  # nothing published
    with pytest.raises(NotImplementedError, match="append"):
        fs.open("fsjob/f/big", "ab")
    with pytest.raises(FileExistsError):
        fs.open("fsjob/f/big", "xb")


def test_metadata_listing_and_directories(fs: PocketFileSystem) -> None:
    fs.pipe({"fsjob/d/x": b"1", "fsjob/d/y/z": b"22"})
    fs.mkdir("fsjob/d/empty")
    assert fs.ls("fsjob/d", detail=False) == ["fsjob/d/empty", "fsjob/d/y", "fsjob/d/x"]
    assert fs.isdir("fsjob/d/empty")
    assert fs.find("fsjob/d") == ["fsjob/d/x", "fsjob/d/y/z"]
    assert fs.sizes(["fsjob/d/x", "fsjob/d/y/z"]) == [1, 2]
    assert fs.modified("fsjob/d/x").tzinfo is not None
    before = fs.ukey("fsjob/d/x")
    fs.pipe("fsjob/d/x", b"3")
    assert fs.ukey("fsjob/d/x") != before
    fs.rmdir("fsjob/d/empty")
    assert not fs.exists("fsjob/d/empty")
    fs.rm("fsjob/d", recursive=True)
    assert not fs.exists("fsjob/d")


def test_it_pickles_by_its_arguments_and_instances_share_one_job(
    fs: PocketFileSystem, job: pocketlib.Job
) -> None:
    back = pickle.loads(pickle.dumps(fs))
    assert back == fs
    other = PocketFileSystem(ticket=job.ticket.to_json(), skip_instance_cache=True)
    assert other.job is fs.job  # one set of connections per ticket in a process
    fs.pipe("fsjob/p", b"pickled")
    assert back.cat("fsjob/p") == b"pickled"
    assert fsspec.open("pocket://fsjob/p", ticket=job.ticket.to_json()).open().read() == (
        b"pickled"
    )


def test_cat_ranges_are_pipelined_and_exact(fs: PocketFileSystem, job: pocketlib.Job) -> None:
    data = bytes(range(256)) * 1024
    fs.pipe("fsjob/r/blob", data)
    job.put("r/packed", data, compress=True)  # compressed: read whole, sliced
    starts = [i * 97 % (len(data) - 4096) for i in range(300)]
    got = fs.cat_ranges(["fsjob/r/blob"] * 300, starts, [s + 4096 for s in starts])
    assert got == [data[s : s + 4096] for s in starts]
    mixed = fs.cat_ranges(["fsjob/r/packed", "fsjob/r/blob", "fsjob/r/missing"], [10, 20, 0],
                          [20, 30, 5])  # fmt: skip
    assert mixed[:2] == [data[10:20], data[20:30]]
    assert isinstance(mixed[2], FileNotFoundError)
    assert job.get_ranges([("r/blob", 0, 3), ("r/packed", 5, 8)]) == [data[0:3], data[5:8]]
    requests = sum(s["job_ops"].get(job.ticket.job, 0) for s in job.stats().values())
    fs.cat_ranges(["fsjob/r/blob"] * 100, [0] * 100, [10] * 100)
    after = sum(s["job_ops"].get(job.ticket.job, 0) for s in job.stats().values())
    assert after - requests == 1  # the 100 ranges of one key in one GET_RANGES request
