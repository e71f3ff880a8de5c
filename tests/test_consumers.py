"""``pocket://`` through the libraries that read and write it: pandas, DuckDB, polars, dask (with
real worker processes), zarr v3; and reads that race overwrites, which see one whole value."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import pickle
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")

import pocketlib  # noqa: E402
from pocketlib import JobHints, LocalCluster  # noqa: E402
from pocketlib.filesystem import PocketFileSystem  # noqa: E402

JOB = "consumers"


@pytest.fixture(scope="module")
def client() -> Iterator[pocketlib.Client]:
    cluster = LocalCluster({"dram": 1}, node_capacity="256MiB", autoscale=False, tick=0.2)
    with cluster, cluster.client() as c:
        yield c


@pytest.fixture(scope="module")
def job(client: pocketlib.Client) -> Iterator[pocketlib.Job]:
    j = client.register_job(JOB, JobHints(capacity="128MiB"))
    yield j
    j.deregister()


@pytest.fixture
def ticket(job: pocketlib.Job) -> str:
    return job.ticket.to_json()


@pytest.fixture
def fs(ticket: str) -> PocketFileSystem:
    return fsspec.filesystem("pocket", ticket=ticket)


def frame(n: int = 1000) -> Any:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame({
        "k": range(n),
        "g": [i % 7 for i in range(n)],
        "x": [i * 0.25 for i in range(n)],
        "s": [f"row-{i}" for i in range(n)],
    })  # fmt: skip


# -- pandas --------------------------------------------------------------------------------------


def test_pandas_parquet_and_csv_with_the_ticket_in_storage_options(ticket: str) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import pocketlib.arrow as parrow

    so = {"ticket": ticket}
    df = frame()
    df.to_parquet(f"pocket://{JOB}/pd/df.parquet", storage_options=so)
    pd.testing.assert_frame_equal(pd.read_parquet(f"pocket://{JOB}/pd/df.parquet",
                                                  storage_options=so), df)  # fmt: skip
    some = pd.read_parquet(f"pocket://{JOB}/pd/df.parquet", storage_options=so, columns=["k", "s"],
                           filters=[("g", "==", 3)])  # fmt: skip
    assert some.columns.tolist() == ["k", "s"]
    assert some["k"].tolist() == [i for i in range(1000) if i % 7 == 3]

    df.to_csv(f"pocket://{JOB}/pd/df.csv", index=False, storage_options=so)
    pd.testing.assert_frame_equal(pd.read_csv(f"pocket://{JOB}/pd/df.csv", storage_options=so), df)

    # partition_cols: hive directories through pyarrow's write_to_dataset, read with a filter
    df.to_parquet(f"pocket://{JOB}/pd/hive", partition_cols=["g"], storage_options=so)
    fs = fsspec.filesystem("pocket", ticket=ticket)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{JOB}/pd/hive", detail=False)) == [
        f"g={g}" for g in range(7)
    ]
    five = pd.read_parquet(f"pocket://{JOB}/pd/hive", storage_options=so, filters=[("g", "==", 5)])
    assert sorted(five["k"]) == [i for i in range(1000) if i % 7 == 5]

    # the pyarrow filesystem of pocketlib's own (no storage_options: a pyarrow FS takes paths)
    fast = pd.read_parquet(f"{JOB}/pd/df.parquet", filesystem=parrow.filesystem(ticket))
    pd.testing.assert_frame_equal(fast, df)


def test_pandas_finds_the_job_from_POCKET_TICKET(
    client: pocketlib.Client, ticket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    monkeypatch.setenv("POCKET_TICKET", ticket)
    df = frame(500)
    df.to_parquet(f"pocket://{JOB}/env/df.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(f"pocket://{JOB}/env/df.parquet"), df)
    df.to_csv(f"pocket://{JOB}/env/df.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(f"pocket://{JOB}/env/df.csv"), df)

    # The ticket from the environment is the filesystem's argument: a pickle carries it to a
    # process without the variable, and the pickled filesystem equals the original.
    fs = fsspec.filesystem("pocket")
    assert fs == fsspec.filesystem("pocket", ticket=ticket)
    monkeypatch.delenv("POCKET_TICKET")
    back = pickle.loads(pickle.dumps(fs))
    assert back == fs
    assert back.cat(f"{JOB}/env/df.csv") == fs.cat(f"{JOB}/env/df.csv")

    # Another job's ticket in the variable: the next call serves that job, not a cached one.
    other = client.register_job("consumers-other", JobHints(capacity="8MiB"))
    try:
        monkeypatch.setenv("POCKET_TICKET", other.ticket.to_json())
        df.head(10).to_csv("pocket://consumers-other/small.csv", index=False)
        assert pd.read_csv("pocket://consumers-other/small.csv")["k"].tolist() == list(range(10))
        assert other.exists("small.csv")
    finally:
        other.deregister()


# -- DuckDB --------------------------------------------------------------------------------------


def test_duckdb_copies_to_pocket_and_queries_a_glob_of_files(fs: PocketFileSystem) -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    con.register_filesystem(fs)  # on the connection that queries
    for i in range(3):
        con.execute(f"COPY (SELECT range AS k, range % 7 AS g, range * {i + 1} AS v "
                    f"FROM range({i * 1000}, {(i + 1) * 1000})) "
                    f"TO 'pocket://{JOB}/dd/part-{i}.parquet' (FORMAT parquet)")  # fmt: skip
    assert fs.ls(f"{JOB}/dd", detail=False) == [f"{JOB}/dd/part-{i}.parquet" for i in range(3)]

    glob = f"read_parquet('pocket://{JOB}/dd/*.parquet')"
    total = con.execute(f"SELECT count(*), sum(k) FROM {glob}").fetchone()
    assert total == (3000, sum(range(3000)))
    got = con.execute(f"SELECT g, sum(v), count(*) FROM {glob} WHERE k % 2 = 0 "
                      "GROUP BY g ORDER BY g").fetchall()  # fmt: skip
    expected: dict[int, list[int]] = {}
    for k in range(3000):
        if k % 2 == 0:
            sums = expected.setdefault(k % 7, [0, 0])
            sums[0] += k * (k // 1000 + 1)
            sums[1] += 1
    assert got == [(g, s, n) for g, (s, n) in sorted(expected.items())]

    # hive partitions written by DuckDB, read back with the partition column
    con.execute("COPY (SELECT range AS k, range % 3 AS g FROM range(30)) "
                f"TO 'pocket://{JOB}/dd/hive' (FORMAT parquet, PARTITION_BY (g))")  # fmt: skip
    assert con.execute(
        f"SELECT g, count(*), sum(k) FROM read_parquet('pocket://{JOB}/dd/hive/*/*.parquet', "
        "hive_partitioning = true) GROUP BY g ORDER BY g"
    ).fetchall() == [(g, 10, sum(k for k in range(30) if k % 3 == g)) for g in range(3)]

    con.execute(f"COPY (SELECT 7 AS x, 'seven' AS y) TO 'pocket://{JOB}/dd/one.csv' (FORMAT csv)")
    assert fs.cat(f"{JOB}/dd/one.csv") == b"x,y\n7,seven\n"
    assert con.execute(f"SELECT * FROM read_csv('pocket://{JOB}/dd/one.csv')").fetchall() == [
        (7, "seven")
    ]


# -- values stored compressed -------------------------------------------------------------------


def compressed_parquet(job: pocketlib.Job, key: str) -> Any:
    """A frame stored as an uncompressed Parquet file in a value lz4-compressed by pocketlib."""
    df = frame(5000).assign(s="same")
    buf = io.BytesIO()
    df.to_parquet(buf, compression=None)
    job.put(key, buf.getvalue(), compress=True)
    assert job.stat(key).size < len(buf.getvalue())  # (stat: the stored size)
    return df


def test_compressed_values_read_whole_through_files(job: pocketlib.Job, ticket: str) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = compressed_parquet(job, "lz4/df.parquet")
    got = pd.read_parquet(f"pocket://{JOB}/lz4/df.parquet", storage_options={"ticket": ticket})
    pd.testing.assert_frame_equal(got, df)


def test_duckdb_reads_a_compressed_value(job: pocketlib.Job, fs: PocketFileSystem) -> None:
    duckdb = pytest.importorskip("duckdb")
    df = compressed_parquet(job, "lz4/duck.parquet")
    info = job.stat("lz4/duck.parquet")
    assert info.compressed
    assert info.size < info.length == len(job.get("lz4/duck.parquet"))
    assert fs.size(f"{JOB}/lz4/duck.parquet") == info.length  # DuckDB sizes files by it
    con = duckdb.connect()
    con.register_filesystem(fs)
    got = con.execute(f"SELECT count(*), sum(k) FROM 'pocket://{JOB}/lz4/duck.parquet'").fetchone()
    assert got == (len(df), int(df["k"].sum()))


# -- polars --------------------------------------------------------------------------------------


def test_polars_through_file_objects_and_pyarrow(fs: PocketFileSystem, ticket: str) -> None:
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    df = pl.DataFrame({"k": range(1000), "g": [i % 4 for i in range(1000)],
                       "s": [f"x{i}" for i in range(1000)]})  # fmt: skip
    # polars' own readers and writers take a string as a local path or one of the URL schemes
    # its Rust object store knows, so pocket:// goes through file objects ...
    with fs.open(f"{JOB}/pl/a.parquet", "wb") as f:
        df.write_parquet(f)
    with fs.open(f"{JOB}/pl/a.parquet", "rb") as f:
        assert pl.read_parquet(f).equals(df)
    with fs.open(f"{JOB}/pl/a.parquet", "rb") as f:
        two = pl.scan_parquet(f).filter(pl.col("g") == 2).select("k").collect()
    assert two["k"].to_list() == [i for i in range(1000) if i % 4 == 2]
    with fs.open(f"{JOB}/pl/a.csv", "wb") as f:
        df.write_csv(f)
    with fs.open(f"{JOB}/pl/a.csv", "rb") as f:
        assert pl.read_csv(f).equals(df)
    # ... or, for Parquet, through pyarrow (fsspec.open of the URL with storage_options)
    url = f"pocket://{JOB}/pl/a.parquet"
    so = {"ticket": ticket}
    assert pl.read_parquet(url, storage_options=so, use_pyarrow=True).equals(df)
    filtered = pl.read_parquet(url, storage_options=so, use_pyarrow=True,
                               pyarrow_options={"filters": [("g", "==", 1)]})  # fmt: skip
    assert filtered["k"].to_list() == [i for i in range(1000) if i % 4 == 1]


# -- dask ----------------------------------------------------------------------------------------


def _loaded(module: str) -> bool:
    import sys

    return module in sys.modules


def _has_variable(name: str) -> bool:
    import os

    return name in os.environ


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # (inside dask, with pandas 3.1)
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # (another scheduler's)
def test_dask_reads_and_writes_parquet_on_worker_processes(
    ticket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    pdf = frame(4000)
    so = {"ticket": ticket}
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                 dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        distributed.Client(cluster) as dc,
    ):  # fmt: skip
        dd.from_pandas(pdf, npartitions=4).to_parquet(f"pocket://{JOB}/dask/out",
                                                      storage_options=so)  # fmt: skip
        # the worker processes wrote the parts: they unpickled the filesystem and attached
        assert any(dc.run(_loaded, "pocketlib.filesystem").values())
        fs = fsspec.filesystem("pocket", ticket=ticket)
        assert fs.ls(f"{JOB}/dask/out", detail=False) == [
            f"{JOB}/dask/out/part.{i}.parquet" for i in range(4)
        ]
        back = dd.read_parquet(f"pocket://{JOB}/dask/out", storage_options=so)
        assert back.npartitions == 4
        got = back.compute().sort_values("k").reset_index(drop=True)
        # (dask reads strings as StringDtype(na_value=pd.NA), pandas 3 makes them na_value=nan)
        pd.testing.assert_frame_equal(got, pdf, check_dtype=False)
        sums = back.groupby("g").x.sum().compute().sort_index()
        assert sums.to_dict() == pdf.groupby("g").x.sum().to_dict()
        two = dd.read_parquet(f"pocket://{JOB}/dask/out", storage_options=so,
                              filters=[("g", "==", 2)]).compute()  # fmt: skip
        assert sorted(two["k"]) == [i for i in range(4000) if i % 7 == 2]

        # The ticket only in this process's environment, set after the workers started: the
        # filesystem's pickle carries it to them.
        monkeypatch.setenv("POCKET_TICKET", ticket)
        assert not any(dc.run(_has_variable, "POCKET_TICKET").values())
        write = dd.from_pandas(pdf.head(100), npartitions=2).to_parquet(
            f"pocket://{JOB}/dask/env", compute=False
        )
        dc.compute(write).result(timeout=30)  # (a worker that cannot unpickle it would hang)
        assert len(dd.read_parquet(f"pocket://{JOB}/dask/env")) == 100
    assert cluster.status.name == "closed"


# -- zarr ----------------------------------------------------------------------------------------


def test_zarr_arrays_and_groups_with_chunks_shards_and_partial_reads(
    fs: PocketFileSystem, ticket: str
) -> None:
    np = pytest.importorskip("numpy")
    zarr = pytest.importorskip("zarr")
    from zarr.storage import FsspecStore

    so = {"ticket": ticket}
    data = np.arange(100 * 60, dtype="int32").reshape(100, 60)
    store = FsspecStore.from_url(f"pocket://{JOB}/zarr/a", storage_options=so)
    a = zarr.create_array(store, shape=data.shape, chunks=(25, 20), dtype="int32", fill_value=-1)
    a[:] = data
    chunks = [p for p in fs.find(f"{JOB}/zarr/a") if "/c/" in p]
    assert len(chunks) == 4 * 3  # one value per chunk
    b = zarr.open_array(FsspecStore.from_url(f"pocket://{JOB}/zarr/a", storage_options=so,
                                             read_only=True), mode="r")  # fmt: skip
    assert np.array_equal(b[:], data)
    assert np.array_equal(b[10:40, 5:27], data[10:40, 5:27])  # four chunks, partly
    # a partial read fetches only its chunks: the one removed reads as the fill value
    fs.rm_file(f"{JOB}/zarr/a/c/3/2")
    assert np.array_equal(b[:25, :20], data[:25, :20])
    assert (b[75:, 40:] == -1).all()
    assert np.array_equal(b[75:, :40], data[75:, :40])

    # shards: inner chunks are byte ranges of one value (the index is read as a suffix range)
    s = zarr.create_array(FsspecStore.from_url(f"pocket://{JOB}/zarr/s", storage_options=so),
                          shape=data.shape, chunks=(10, 20), shards=(50, 60),
                          dtype="int32")  # fmt: skip
    s[:] = data
    assert len([p for p in fs.find(f"{JOB}/zarr/s") if "/c/" in p]) == 2
    assert np.array_equal(s[12:47, 21:39], data[12:47, 21:39])
    assert np.array_equal(s[:], data)

    # a group by URL, with attributes and an array in it
    g = zarr.open_group(f"pocket://{JOB}/zarr/g", mode="w", storage_options=so)
    g.attrs["note"] = "ephemeral"
    g.create_array("x", shape=(50,), chunks=(10,), dtype="f8")[:] = np.arange(50.0)
    again = zarr.open_group(f"pocket://{JOB}/zarr/g", mode="r", storage_options=so)
    assert again.attrs["note"] == "ephemeral"
    assert again["x"][12:33].tolist() == [float(i) for i in range(12, 33)]


# -- reads racing overwrites ---------------------------------------------------------------------


def checked(byte: int, n: int) -> bytes:
    """``n`` copies of ``byte`` and the SHA-256 of them: a value that shows any mix."""
    body = bytes([byte]) * n
    return body + hashlib.sha256(body).digest()


def whole(data: bytes) -> bool:
    body, trailer = data[:-32], data[-32:]
    return len(set(body)) == 1 and hashlib.sha256(body).digest() == trailer


@contextlib.contextmanager
def overwriting(fs: PocketFileSystem, path: str, values: list[bytes], times: int
                ) -> Iterator[threading.Event]:  # fmt: skip
    """A thread that stores ``values`` at ``path`` in turn, ``times`` times; the event is set
    when it is done."""
    fs.pipe_file(path, values[0])
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for i in range(times):
                fs.pipe_file(path, values[(i + 1) % len(values)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        done.wait()
        thread.join()
    assert not errors


def read_while(
    done: threading.Event, readers: dict[str, Callable[[], Any]]
) -> dict[str, list[Any]]:
    """Every reader in turn until ``done`` (each at least once): what they returned or raised."""
    out: dict[str, list[Any]] = {name: [] for name in readers}
    while True:
        finished = done.is_set()
        for name, read in readers.items():
            try:
                out[name].append(read())
            except Exception as exc:
                out[name].append(exc)
        if finished:
            return out


def test_reads_racing_overwrites_see_one_whole_value(fs: PocketFileSystem) -> None:
    path = f"{JOB}/race/v"
    a, b = checked(ord("A"), 300_000), checked(ord("B"), 200_000)  # different sizes too

    def pieces() -> bytes:
        with fs.open(path, "rb") as f:
            return b"".join(iter(lambda: f.read(50_000), b""))

    def read_all() -> bytes:
        with fs.open(path, "rb") as f:
            return f.read()

    with overwriting(fs, path, [a, b], 400) as done:
        got = read_while(done, {
            "cat_file": lambda: fs.cat_file(path),
            "open": read_all,
            "pieces": pieces,
            "range": lambda: fs.cat_file(path, 1000, 1010),
        })  # fmt: skip
    for name in ("cat_file", "open", "pieces"):
        assert all(v in (a, b) for v in got[name]), (name, Counter(map(type, got[name])))
    assert all(v in (b"A" * 10, b"B" * 10) for v in got["range"])


def test_large_values_racing_overwrites_are_whole_or_a_conflict(fs: PocketFileSystem) -> None:
    path = f"{JOB}/race/large"
    n = 5 * 1024 * 1024  # above what a file reads whole when it opens: ranges, pinned
    a, b = checked(ord("a"), n), checked(ord("b"), n + 4096)

    def pieces() -> bytes:
        with fs.open(path, "rb") as f:
            return b"".join(iter(lambda: f.read(1 << 20), b""))

    with overwriting(fs, path, [a, b], 30) as done:
        got = read_while(done, {"pieces": pieces})["pieces"]
    for v in got:
        if isinstance(v, bytes):
            assert whole(v)
            assert v in (a, b)
        else:
            assert isinstance(v, pocketlib.ConflictError), v
    assert pieces() in (a, b)  # once the writes stop: the value, whole


def test_parquet_reads_racing_overwrites_get_one_of_the_two_tables(
    fs: PocketFileSystem, ticket: str
) -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import pocketlib.arrow as parrow

    small, large = frame(1000), frame(3000).assign(x=-1.0)
    files = []
    for df in (small, large):
        buf = io.BytesIO()
        df.to_parquet(buf)
        files.append(buf.getvalue())
    path = f"{JOB}/race/t.parquet"
    arrow_fs = parrow.filesystem(ticket)

    def through_a_handle() -> Any:
        with fs.open(path, "rb") as f:
            return pd.read_parquet(f)

    with overwriting(fs, path, files, 200) as done:
        got = read_while(done, {
            # one open file: all of one value
            "fsspec file": through_a_handle,
            "arrow file": lambda: pq.read_table(arrow_fs.open_input_file(path)).to_pandas(),
            # by path, pyarrow's dataset reader opens the file twice (footer, then data)
            "url": lambda: pd.read_parquet(f"pocket://{path}", storage_options={"ticket": ticket}),
            "arrow path": lambda: pd.read_parquet(path, filesystem=arrow_fs),
        })  # fmt: skip
    for name, frames in got.items():
        for df in frames:
            if isinstance(df, OSError | pa.ArrowException) and name in ("url", "arrow path"):
                continue  # (overwritten between its two opens: Arrow's "corrupt file?")
            assert not isinstance(df, BaseException), (name, df)
            assert df.equals(small) or df.equals(large), name
