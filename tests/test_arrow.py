"""pocketlib's pyarrow filesystem: zero-copy input files when co-located, datasets, IPC."""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
from collections.abc import Iterator

import pytest

pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
ipc = pytest.importorskip("pyarrow.ipc")
pq = pytest.importorskip("pyarrow.parquet")
pafs = pytest.importorskip("pyarrow.fs")

import pocketlib  # noqa: E402
import pocketlib.arrow as parrow  # noqa: E402
from pocketlib import JobHints, LocalCluster  # noqa: E402


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    cluster = LocalCluster({"dram": 1}, node_capacity="256MiB", autoscale=False, tick=0.2)
    with pytest.MonkeyPatch.context() as mp, cluster, cluster.client() as client:
        mp.setenv("POCKET_SHARED_MEMORY", "1")
        j = client.register_job("arrow", JobHints(capacity="128MiB"))
        yield j
        j.deregister()


def table(n: int = 200_000) -> pa.Table:
    return pa.table({"k": pa.array(range(n), pa.int64()), "g": pa.array([i % 7 for i in range(n)]),
                     "x": pa.array([i * 0.5 for i in range(n)])})  # fmt: skip


def ipc_bytes(t: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue()


def test_an_ipc_read_from_a_co_located_node_copies_nothing(job: pocketlib.Job) -> None:
    fs = parrow.filesystem(job.ticket.to_json())
    t = table()
    job.put("t.arrow", ipc_bytes(t))
    before = pa.total_allocated_bytes()
    got = ipc.open_file(fs.open_input_file("arrow/t.arrow")).read_all()
    assert got.equals(t)
    assert pa.total_allocated_bytes() == before  # no Arrow allocation: nothing was copied
    handler_job = parrow.PocketFileSystem(job.ticket.to_json()).job
    arena = handler_job.client.arena(handler_job.router.write_node(b"t.arrow"))
    assert arena is not None
    base = ctypes.addressof(ctypes.c_char.from_buffer(arena._map))
    address = got.column("x").chunks[0].buffers()[1].address
    assert base <= address < base + len(arena._map)  # the node's own memory
    job.delete("t.arrow")  # the lease keeps the value's space while the table lives
    job.put("filler", os.urandom(len(ipc_bytes(t))))
    assert got.equals(t)


def test_parquet_datasets_round_trip_with_hive_partitions_and_a_filter(job: pocketlib.Job) -> None:
    fs = parrow.filesystem(job.ticket.to_json())
    t = table(50_000)
    hive = ds.partitioning(pa.schema([("g", pa.int64())]), flavor="hive")
    ds.write_dataset(t, "arrow/ds", format="parquet", filesystem=fs, partitioning=hive)
    listed = fs.get_file_info(pafs.FileSelector("arrow/ds", recursive=True))
    assert any("g=3" in info.path for info in listed)
    dataset = ds.dataset("arrow/ds", format="parquet", filesystem=fs, partitioning="hive")
    got = dataset.to_table(filter=ds.field("g") == 3).sort_by("k")
    assert got.column("k").to_pylist() == [i for i in range(50_000) if i % 7 == 3]


def test_over_tcp_the_same_bytes_come_back(
    job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = table(10_000)
    job.put("tcp.arrow", ipc_bytes(t))
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    client = pocketlib.Client(job.ticket.nodes)  # a client that maps nothing
    remote = parrow.PocketHandler.__new__(parrow.PocketHandler)
    remote.fs = parrow.PocketFileSystem(job.ticket.to_json(), skip_instance_cache=True)
    remote.fs.job = client.attach(job.ticket)
    got = ipc.open_file(remote.open_input_file("arrow/tcp.arrow")).read_all()
    assert got.equals(t)
    client.close()


def test_corrupted_parquet_is_a_clear_error_and_harms_nothing(job: pocketlib.Job) -> None:
    fs = parrow.filesystem(job.ticket.to_json())
    pq.write_table(table(1000), "arrow/good.parquet", filesystem=fs)
    job.put("bad.parquet", b"PAR1" + os.urandom(4000) + b"PAR1")
    with pytest.raises((pa.ArrowInvalid, OSError)):
        pq.read_table("arrow/bad.parquet", filesystem=fs)
    assert pq.read_table("arrow/good.parquet", filesystem=fs).num_rows == 1000
    with pytest.raises(FileNotFoundError):
        fs.open_input_file("arrow/missing.parquet")
    with pytest.raises(NotImplementedError, match="append"):
        fs.open_append_stream("arrow/good.parquet")


def test_urls_for_tables_and_datasets(job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKET_TICKET", job.ticket.to_json())
    t = table(20_000)
    parrow.write_table(t, "pocket://arrow/url/t.arrow")
    # Earlier tests' garbage may hold Arrow buffers: a collection in the middle of the read
    # would free them and count as less memory than before, not more.
    gc.collect()
    before = pa.total_allocated_bytes()
    assert parrow.read_table("pocket://arrow/url/t.arrow").equals(t)
    assert pa.total_allocated_bytes() == before
    parrow.write_dataset(t, "pocket://arrow/url/ds", partitioning=["g"])
    got = parrow.dataset("pocket://arrow/url/ds").to_table(filter=ds.field("g") == 5)
    assert sorted(got.column("k").to_pylist()) == [i for i in range(20_000) if i % 7 == 5]


def test_over_tcp_compressed_empty_and_missing_values(
    job: pocketlib.Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = os.urandom(1000) * 300
    job.put("tcp/z", value, compress=True)
    job.put("tcp/empty", b"")
    monkeypatch.setenv("POCKET_SHARED_MEMORY", "0")
    client = pocketlib.Client(job.ticket.nodes)  # a client that maps nothing
    fs = parrow.PocketFileSystem(job.ticket.to_json(), skip_instance_cache=True)
    fs.job = client.attach(job.ticket)
    remote = pafs.PyFileSystem(parrow.PocketHandler(fs))
    assert remote.open_input_file("arrow/tcp/z").read() == value  # read into Arrow's pool
    assert remote.open_input_stream("arrow/tcp/empty").read() == b""
    with pytest.raises(FileNotFoundError):
        remote.open_input_file("arrow/tcp/missing")
    client.close()


def test_an_unverified_co_located_read_is_the_same_table_without_a_copy(
    job: pocketlib.Job,
) -> None:
    t = table(50_000)
    job.put("unverified.arrow", ipc_bytes(t))
    ticket = job.ticket.to_json()
    before = pa.total_allocated_bytes()
    got = parrow.read_table("pocket://arrow/unverified.arrow", ticket=ticket, verify=False)
    assert got.equals(t)
    assert pa.total_allocated_bytes() == before
    fs = parrow.filesystem(ticket, verify=False)
    assert pickle.loads(pickle.dumps(fs)) == fs  # (the choice travels with the filesystem)
    assert pickle.loads(pickle.dumps(fs)) != parrow.filesystem(ticket)
