"""pytest-benchmark: Parquet and Arrow IPC reads through ``pocketlib.arrow``, next to its peers.

Skipped by the default test run (``-m 'not slow and not bench'``). Run it with::

    python -m pytest benchmarks/test_bench_arrow.py -m bench --benchmark-only \\
        -p no:cacheprovider -s

One data set for every contender, made once per run: 16 Parquet files of about 64 MiB (1 GiB;
uncompressed, pyarrow's default encodings: an int64 row number, a float64 and an int32 drawn at
random, a string of a random 63-bit number, and a string of 16 categories), and one Arrow IPC
file of 256 MiB (8 Mi rows of two int64 and two float64 columns, in batches of 1 Mi rows).
The same bytes are stored in a job on one DRAM node of a LocalCluster on this host, in a
/dev/shm directory and in a bucket of a local SeaweedFS (``pocketlib.testing.s3server``).

Groups (each a pytest-benchmark group; a Parquet read is
``pyarrow.dataset.dataset(<dir>, filesystem=...).to_table()``, all columns, directory listing
included):

1a. co-located: ``pocketlib.arrow.filesystem`` with a client that mapped the node's memory
    (input files are Arrow buffers over it) against pyarrow's ``LocalFileSystem`` over the
    /dev/shm copy (default: reads copy; and with ``use_mmap=True``, for reference).
1b. over TCP: pocketlib with a client that maps nothing (``POCKET_SHARED_MEMORY=0``, one get per
    file) against s3fs (through pyarrow's ``FSSpecHandler``) and pyarrow's native
    ``S3FileSystem``, both against SeaweedFS on 127.0.0.1.
2.  an Arrow IPC read of the 256 MiB table: ``pocketlib.arrow.read_table`` co-located (which
    must allocate no Arrow memory: asserted in the benchmark), checked against the value's
    checksum (the default) and with ``verify=False``, against the same read over TCP.

The machine is shared (2 cores), so the contenders of a group are interleaved: before each
timed round of one contender, the others of its group each run one round (their order rotates),
timed by hand. Every round of every contender is pooled; at the end of the module a table of
the pooled medians and their ratios is printed and appended to
``benchmarks/results/arrow-<date>.md``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
pc = pytest.importorskip("pyarrow.compute")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")
pafs = pytest.importorskip("pyarrow.fs")

import pocketlib  # noqa: E402
import pocketlib.arrow as parrow  # noqa: E402
from pocketlib import JobHints, LocalCluster  # noqa: E402
from pocketlib.bench.tiers import environment  # noqa: E402
from pocketlib.filesystem import PocketFileSystem  # noqa: E402

pytestmark = pytest.mark.bench

MiB = 1 << 20
FILES = 16
ROWS_PER_FILE = 1_494_000  # about 64 MiB of Parquet a file
COMPRESSION = "none"
IPC_ROWS = 8 * MiB  # 4 columns of 8 bytes: 256 MiB
ROUNDS = 5  # timed rounds of each test; each also runs a round of every other contender
JOB = "bench-arrow"
PQ_DIR, IPC_KEY = "pq", "ipc/table.arrow"

#: group -> contender -> seconds of every round (its own test's and the other tests' setups)
SAMPLES: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
G_SHM = "1a. 1 GiB Parquet, co-located"
G_TCP = "1b. 1 GiB Parquet, over TCP"
G_IPC = "2. 256 MiB Arrow IPC"
_warm: set[str] = set()


# -- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shm_dir() -> Iterator[str]:
    """The data set as files in /dev/shm: ``pq/part-NN.parquet`` and ``ipc/table.arrow``."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = tempfile.mkdtemp(prefix="bench-arrow-", dir="/dev/shm")
    try:
        os.makedirs(os.path.join(path, PQ_DIR))
        os.makedirs(os.path.join(path, os.path.dirname(IPC_KEY)))
        rng = np.random.default_rng(0)
        categories = pa.array([f"category-{i:02d}" for i in range(16)])
        for i in range(FILES):
            n = ROWS_PER_FILE
            t = pa.table({
                "id": pa.array(np.arange(i * n, (i + 1) * n, dtype=np.int64)),
                "x": pa.array(rng.random(n)),
                "y": pa.array(rng.integers(0, 1 << 31, n, dtype=np.int32)),
                "s": pc.cast(pa.array(rng.integers(0, 1 << 63, n, dtype=np.int64)), pa.string()),
                "c": categories.take(pa.array(rng.integers(0, 16, n))),
            })  # fmt: skip
            pq.write_table(t, os.path.join(path, PQ_DIR, f"part-{i:02d}.parquet"),
                           compression=COMPRESSION)  # fmt: skip
        n = IPC_ROWS
        t = pa.table({"a": np.arange(n, dtype=np.int64), "b": rng.random(n),
                      "c": rng.integers(0, 1 << 40, n), "d": rng.random(n)})  # fmt: skip
        with pa.OSFile(os.path.join(path, IPC_KEY), "wb") as f, \
                pa.ipc.new_file(f, t.schema) as writer:  # fmt: skip
            writer.write_table(t, max_chunksize=MiB)
        del t
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _files(shm_dir: str) -> list[tuple[str, str]]:
    """(key, local path) of every file of the data set."""
    out = []
    for root, _, names in os.walk(shm_dir):
        for name in sorted(names):
            local = os.path.join(root, name)
            out.append((os.path.relpath(local, shm_dir), local))
    return sorted(out)


@pytest.fixture(scope="module")
def job(shm_dir: str) -> Iterator[pocketlib.Job]:
    cluster = LocalCluster({"dram": 1}, node_capacity="3GiB", autoscale=False)
    with cluster, cluster.client() as client:
        j = client.register_job(JOB, JobHints(capacity="2GiB"))
        try:
            for key, local in _files(shm_dir):
                with open(local, "rb") as f:
                    j.put(key, f.read())
            yield j
        finally:
            j.deregister()


@pytest.fixture(scope="module")
def shm_fs(job: pocketlib.Job) -> pafs.PyFileSystem:
    """pocketlib's pyarrow filesystem, its client mapping the node's memory."""
    with environment({"POCKET_SHARED_MEMORY": "1"}):
        fs = parrow.filesystem(job.ticket.to_json())
        shared = PocketFileSystem(job.ticket.to_json()).job
        if shared.client.arena(shared.router.write_node(b"x")) is None:
            pytest.skip("the node's memory cannot be mapped here")
    return fs


@pytest.fixture(scope="module")
def tcp_fs(job: pocketlib.Job) -> Iterator[pafs.PyFileSystem]:
    """pocketlib's pyarrow filesystem over a client that maps nothing (as on another host)."""
    with environment({"POCKET_SHARED_MEMORY": "0"}):
        client = pocketlib.Client(job.ticket.nodes)
        remote = client.attach(job.ticket)
        assert all(client.arena(node) is None for node in job.ticket.nodes)
    fs = PocketFileSystem(job.ticket.to_json(), skip_instance_cache=True)
    fs.job = remote
    try:
        yield pafs.PyFileSystem(parrow.PocketHandler(fs))
    finally:
        client.close()


@pytest.fixture(scope="module")
def s3(shm_dir: str) -> Iterator[tuple[Any, str]]:
    """A SeaweedFS S3 gateway on 127.0.0.1 holding the Parquet files: (server, bucket)."""
    from pocketlib.testing.s3server import S3Server, S3ServerError

    try:
        server = S3Server().start()
    except S3ServerError as exc:
        pytest.skip(f"no S3 server: {exc}")
    try:
        bucket = server.create_bucket()
        client = server.client(read_timeout=120.0)
        for key, local in _files(shm_dir):
            if key.startswith(PQ_DIR + "/"):
                client.upload_file(local, bucket, key)
        yield server, bucket
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3fs_fs(s3: tuple[Any, str]) -> Any:
    s3fs = pytest.importorskip("s3fs")
    server, _ = s3
    return s3fs.S3FileSystem(key=server.access_key, secret=server.secret_key,
                             endpoint_url=server.endpoint_url,
                             client_kwargs={"region_name": server.region},
                             skip_instance_cache=True)  # fmt: skip


@pytest.fixture(scope="module")
def arrow_s3(s3: tuple[Any, str]) -> Any:
    server, _ = s3
    endpoint = server.endpoint_url.removeprefix("http://")
    return pafs.S3FileSystem(access_key=server.access_key, secret_key=server.secret_key,
                             region=server.region, scheme="http",
                             endpoint_override=endpoint)  # fmt: skip


# -- contenders ---------------------------------------------------------------------------------
def read_parquet(path: str, fs: Any) -> int:
    """The whole data set into one table (freed before returning); its row count."""
    return int(ds.dataset(path, format="parquet", filesystem=fs).to_table().num_rows)


@pytest.fixture(scope="module")
def parquet_contenders(
    request: pytest.FixtureRequest, shm_dir: str
) -> dict[str, dict[str, Callable[[], int]]]:
    """group -> name -> a read (fixtures are made on first use)."""
    local = pafs.LocalFileSystem()
    local_mmap = pafs.LocalFileSystem(use_mmap=True)
    here = os.path.join(shm_dir, PQ_DIR)

    def fixture(name: str) -> Any:
        return request.getfixturevalue(name)

    def pocket(name: str) -> Callable[[], int]:
        return lambda: read_parquet(f"{JOB}/{PQ_DIR}", fixture(name))

    def bucket() -> str:
        return f"{fixture('s3')[1]}/{PQ_DIR}"

    return {
        G_SHM: {
            "pocketlib co-located": pocket("shm_fs"),
            "LocalFileSystem /dev/shm": lambda: read_parquet(here, local),
            "LocalFileSystem /dev/shm, use_mmap": lambda: read_parquet(here, local_mmap),
        },
        G_TCP: {
            "pocketlib TCP": pocket("tcp_fs"),
            "s3fs (SeaweedFS)": lambda: read_parquet(bucket(), fixture("s3fs_fs")),
            "pyarrow S3FileSystem (SeaweedFS)": lambda: read_parquet(bucket(), fixture("arrow_s3")),
        },
    }


def _interleaved(benchmark: Any, group: str, name: str,
                 contenders: dict[str, Callable[[], int]], expect: int) -> None:  # fmt: skip
    """``name`` under pytest-benchmark, each of its rounds after one round of every other
    contender of ``group`` (timed here, in an order that rotates); every round recorded."""
    others = [n for n in contenders if n != name]
    turn = itertools.count()

    def timed(contender: str) -> None:
        started = time.perf_counter()
        got = contenders[contender]()
        SAMPLES[group][contender].append(time.perf_counter() - started)
        assert got == expect, (contender, got, expect)

    def setup() -> None:
        k = next(turn) % max(len(others), 1)
        for other in others[k:] + others[:k]:
            timed(other)

    if group not in _warm:  # warm up (connections, listings, page cache), untimed
        _warm.add(group)
        for contender in contenders:
            assert contenders[contender]() == expect
    benchmark.group = group
    benchmark.name = name
    benchmark.pedantic(lambda: timed(name), setup=setup, rounds=ROUNDS, iterations=1)


# -- 1. Parquet ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pocketlib co-located", "LocalFileSystem /dev/shm",
                                  "LocalFileSystem /dev/shm, use_mmap"])  # fmt: skip
def test_parquet_colocated(benchmark: Any, name: str, parquet_contenders: Any,
                           report: None) -> None:  # fmt: skip
    _interleaved(benchmark, G_SHM, name, parquet_contenders[G_SHM], FILES * ROWS_PER_FILE)


@pytest.mark.parametrize("name", ["pocketlib TCP", "s3fs (SeaweedFS)",
                                  "pyarrow S3FileSystem (SeaweedFS)"])  # fmt: skip
def test_parquet_tcp(benchmark: Any, name: str, parquet_contenders: Any, report: None) -> None:
    _interleaved(benchmark, G_TCP, name, parquet_contenders[G_TCP], FILES * ROWS_PER_FILE)


# -- 2. Arrow IPC -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ipc_contenders(job: pocketlib.Job, shm_fs: Any, tcp_fs: Any) -> dict[str, Callable[[], int]]:
    ticket = job.ticket.to_json()
    url = f"pocket://{JOB}/{IPC_KEY}"

    def colocated(verify: bool = True) -> int:
        before = pa.total_allocated_bytes()
        t = parrow.read_table(url, ticket=ticket, verify=verify)
        assert pa.total_allocated_bytes() == before, "a co-located IPC read allocated"
        return int(t.num_rows)

    def tcp() -> int:
        return int(pa.ipc.open_file(tcp_fs.open_input_file(f"{JOB}/{IPC_KEY}")).read_all()
                   .num_rows)  # fmt: skip

    return {"pocketlib co-located read_table": colocated, "pocketlib TCP": tcp,
            "pocketlib co-located read_table, verify=False": lambda: colocated(False)}  # fmt: skip


@pytest.mark.parametrize("name", ["pocketlib co-located read_table", "pocketlib TCP",
                                  "pocketlib co-located read_table, verify=False"])  # fmt: skip
def test_ipc(benchmark: Any, name: str, ipc_contenders: Any, report: None) -> None:
    _interleaved(benchmark, G_IPC, name, ipc_contenders, IPC_ROWS)


# -- the table ----------------------------------------------------------------------------------
#: (group, numerator, denominator, target): the ratio is numerator's median / denominator's, so
#: above 1 the denominator (pocketlib) is faster.
RATIOS = [
    (G_SHM, "LocalFileSystem /dev/shm", "pocketlib co-located", 1.0),
    (G_SHM, "LocalFileSystem /dev/shm, use_mmap", "pocketlib co-located", None),
    (G_TCP, "s3fs (SeaweedFS)", "pocketlib TCP", 2.0),
    (G_TCP, "pyarrow S3FileSystem (SeaweedFS)", "pocketlib TCP", 1.0),
    (G_IPC, "pocketlib TCP", "pocketlib co-located read_table", 10.0),
    (G_IPC, "pocketlib TCP", "pocketlib co-located read_table, verify=False", 10.0),
]


def _table(parquet_size: int) -> str:
    sizes = {G_SHM: parquet_size, G_TCP: parquet_size, G_IPC: IPC_ROWS * 32}
    lines = ["| group | contender | rounds | median s | GB/s |", "| :-- | :-- | --: | --: | --: |"]
    for group, by_name in SAMPLES.items():
        for name, samples in by_name.items():
            m = statistics.median(samples)
            lines.append(f"| {group} | {name} | {len(samples)} | {m:.3f} | "
                         f"{sizes[group] / m / 1e9:.2f} |")  # fmt: skip
    lines += ["", "| ratio (higher: pocketlib faster) | measured | target | met |",
              "| :-- | --: | --: | :-- |"]  # fmt: skip
    for group, num, den, target in RATIOS:
        a, b = SAMPLES.get(group, {}).get(num), SAMPLES.get(group, {}).get(den)
        if not a or not b:
            continue
        r = statistics.median(a) / statistics.median(b)
        met = "-" if target is None else ("yes" if r >= target else "NO")
        want = "-" if target is None else f">= {target:g}x"
        lines.append(f"| {num} / {den} | {r:.2f}x | {want} | {met} |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def report(shm_dir: str) -> Iterator[None]:
    """At the end of the module: the medians and ratios, printed and appended to
    ``benchmarks/results/arrow-<date>.md``."""
    size = sum(os.path.getsize(p) for k, p in _files(shm_dir) if k.startswith(PQ_DIR + "/"))
    yield
    if not SAMPLES:
        return
    now = dt.datetime.now()
    head = (f"## Run of {now:%Y-%m-%d %H:%M}\n\nParquet: {FILES} files, {size / 2**30:.3f} GiB "
            f"({COMPRESSION}); pyarrow {pa.__version__}; Python {platform.python_version()}; "
            f"{os.cpu_count()} CPUs\n\n")  # fmt: skip
    text = head + _table(size) + "\n"
    print("\n\n" + text)
    out = os.path.join(os.path.dirname(__file__), "results", f"arrow-{now:%Y-%m-%d}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "a") as f:
        f.write(text + "\n")
