"""The executor on local processes: PyWren/Lithops names, a shared job, references, errors."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster
from pocketlib.errors import ConfigError

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2) as c:
        yield c


@pytest.fixture
def job(cluster: LocalCluster) -> Iterator[pocketlib.Job]:
    with cluster.client() as client:
        j = client.register_job("exec", JobHints(capacity="32MiB"))
        yield j
        j.deregister()


@pytest.fixture
def fexec(job: pocketlib.Job) -> Iterator[pls.FunctionExecutor]:
    with pls.FunctionExecutor(job=job, workers=2, threshold=256 * 1024) as f:
        yield f


def square_into(i: int, job: pocketlib.Job) -> int:
    job.put(f"sq/{i}", str(i * i).encode())
    return os.getpid()


def total(results: list[int], job: pocketlib.Job) -> int:
    return sum(int(job.get(f"sq/{i}")) for i in range(len(results)))


def echo_size(blob: bytes, *, extra: int = 0) -> bytes:
    return bytes(reversed(blob)) + bytes(extra)


def fails(part: int) -> None:
    raise KeyError(f"part {part} is missing")


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_map_gives_each_call_the_job_and_results_in_order(
    fexec: pls.FunctionExecutor, job: pocketlib.Job
) -> None:
    futures = fexec.map(square_into, range(8))
    assert all(isinstance(f, cf.Future) for f in futures)
    pids = fexec.get_result(futures)
    assert len(pids) == 8
    assert os.getpid() not in pids  # ran in worker processes
    assert job.get_many([f"sq/{i}" for i in range(8)]) == {
        f"sq/{i}": str(i * i).encode() for i in range(8)
    }
    reduced = fexec.map_reduce(square_into, range(5), total)
    assert reduced.result() == sum(i * i for i in range(5))


def test_large_arguments_and_results_travel_through_the_job(
    fexec: pls.FunctionExecutor, job: pocketlib.Job
) -> None:
    def requests() -> int:  # this job's requests, over its nodes
        return sum(s["job_ops"].get(job.ticket.job, 0) for s in job.stats().values())

    blob = os.urandom(3 * MiB)
    before = requests()
    future = fexec.call_async(echo_size, {"blob": blob, "extra": MiB})
    assert future.result() == bytes(reversed(blob)) + bytes(MiB)
    # The argument and the result each put and got once through the job (a co-located put
    # is a reserve and a commit).
    assert requests() - before >= 4
    assert list(job.list("refs/")) == []  # freed as they were read
    before = requests()
    assert fexec.call_async(echo_size, (b"small",)).result() == b"llams"
    assert requests() == before  # small values ride in the call itself


def test_a_remote_exception_keeps_its_type_and_traceback(fexec: pls.FunctionExecutor) -> None:
    future = fexec.call_async(fails, 7)
    with pytest.raises(KeyError, match="part 7 is missing") as caught:
        fexec.get_result(future)
    remote = "".join(traceback.format_exception(caught.value))
    assert "in fails" in remote  # the worker's frame, from the remote traceback


def test_wait_all_any_always_and_a_fraction(fexec: pls.FunctionExecutor) -> None:
    fast, slow = fexec.map(nap, [0.0, 1.5])
    done, not_done = fexec.wait([fast, slow], return_when=pls.ALWAYS)
    assert len(done) + len(not_done) == 2
    done, not_done = fexec.wait([fast, slow], return_when=pls.ANY_COMPLETED)
    assert fast in done
    done, not_done = fexec.wait([fast, slow], return_when=0.5)
    assert fast in done
    done, not_done = fexec.wait([fast, slow], return_when=pls.ALL_COMPLETED)
    assert not not_done
    with pytest.raises(ConfigError, match="fraction"):
        fexec.wait([fast], return_when=2)


def test_lambdas_travel_by_value_and_a_job_is_required_to_use_one(job: pocketlib.Job) -> None:
    pytest.importorskip("cloudpickle")
    with pls.FunctionExecutor(job=job, workers=1) as fexec:
        offset = 10
        assert fexec.get_result(fexec.map(lambda x: x + offset, [1, 2])) == [11, 12]
    with pls.FunctionExecutor(workers=1) as bare, pytest.raises(ConfigError, match="job"):
        bare.map(square_into, [1])


# -- the shuffle -----------------------------------------------------------------------------------


def words_of(text: str) -> list[tuple[str, int]]:
    return [(w, 1) for w in text.split()]


def count_words(records: list[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word, n in records:
        counts[word] = counts.get(word, 0) + n
    return counts


def test_map_shuffle_reduce_counts_words(fexec: pls.FunctionExecutor, job: pocketlib.Job) -> None:
    texts = ["a b c a", "b c d", "a a e", "f"] * 3
    futures = fexec.map_shuffle_reduce(words_of, texts, count_words, reducers=3, timeout=60)
    parts = fexec.get_result(futures)
    assert len(parts) == 3
    merged: dict[str, int] = {}
    for part in parts:
        assert not set(part) & set(merged)  # each word reduced in exactly one partition
        merged.update(part)
        assert all(pls.partition_of(w, 3) == parts.index(part) for w in part)
    expected: dict[str, int] = {}
    for text in texts:
        for w in text.split():
            expected[w] = expected.get(w, 0) + 1
    assert merged == expected
    assert [k for k in job.list("shuffle/")] == []  # every part freed as it was read


def test_a_reader_waits_for_every_mapper_and_duplicates_change_nothing(
    job: pocketlib.Job,
) -> None:
    result: list[list[bytes]] = []
    reader = pls.ShuffleReader(job, "s1", reducer=1, mappers=3)
    t = threading.Thread(target=lambda: result.append(reader.read(timeout=30)))
    t.start()  # before any mapper
    for m in (0, 2, 1, 2):  # mapper 2 delivered twice
        with pls.ShuffleWriter(job, "s1", mapper=m, reducers=2) as w:
            w.write(1, f"m{m}".encode())
    t.join(timeout=60)
    assert result == [[b"m0", b"m1", b"m2"]]

    def dying_mapper() -> None:
        with pls.ShuffleWriter(job, "s2", mapper=0, reducers=2) as w:
            w.write(0, b"half")
            raise RuntimeError("the mapper died")

    with pytest.raises(RuntimeError):
        dying_mapper()
    assert list(job.list("s2/")) == []  # nothing published


def test_partitions_are_the_same_in_every_process() -> None:
    keys = ["a", b"b", 3, ("t", 1)]
    code = ("import pocketlib.serverless as pls\n"
            "print([pls.partition_of(k, 7) for k in ['a', b'b', 3, ('t', 1)]])\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = run.stdout
    assert out.strip() == str([pls.partition_of(k, 7) for k in keys])


# -- Lambda backends ---------------------------------------------------------------------------

LAMBDA_ENV = {"env": {"PYTHONPATH": os.pathsep.join([os.path.dirname(__file__),
                                                     os.environ.get("PYTHONPATH", "")])},
              "memory_mb": 512, "timeout_s": 60}  # fmt: skip


def test_the_lambda_backend_runs_calls_in_local_lambda_environments(job: pocketlib.Job) -> None:
    with pls.FunctionExecutor("lambda", job=job, workers=3, lambda_args=LAMBDA_ENV) as fexec:
        pids = fexec.get_result(fexec.map(square_into, range(6)))
        assert os.getpid() not in pids
        assert len(set(pids)) <= 3  # warm environments reused
        assert job.get("sq/5") == b"25"
        blob = os.urandom(5 * MiB)  # over what an invoke may carry: by reference both ways
        assert fexec.call_async(echo_size, (blob,)).result() == bytes(reversed(blob))
        with pytest.raises(KeyError, match="part 3 is missing") as caught:
            fexec.call_async(fails, 3).result()
        assert "in fails" in str(caught.value.__cause__)
        texts = ["x y", "y z z"]
        parts = fexec.get_result(fexec.map_shuffle_reduce(words_of, texts, count_words,
                                                          reducers=2, timeout=60))  # fmt: skip
        assert {w: n for p in parts for w, n in p.items()} == {"x": 1, "y": 2, "z": 2}


def test_the_aws_backend_invokes_through_boto3(job: pocketlib.Job) -> None:
    pytest.importorskip("boto3")
    from pocketlib.serverless.lambda_backend import HANDLER

    with pls.LocalLambda(HANDLER, name="pocket-exec", **LAMBDA_ENV) as deployed:
        client_args = {"endpoint_url": deployed.serve(), "region_name": "us-east-1",
                       "aws_access_key_id": "local", "aws_secret_access_key": "local"}  # fmt: skip
        with pls.FunctionExecutor("aws", job=job, workers=2, function_name="pocket-exec",
                                  lambda_args=client_args) as fexec:  # fmt: skip
            assert len(fexec.get_result(fexec.map(square_into, [7, 8]))) == 2
        assert deployed.invocations == 2
    assert job.get("sq/8") == b"64"


def test_the_lithops_backend_runs_calls_as_lithops_functions(job: pocketlib.Job) -> None:
    pytest.importorskip("lithops")
    with pls.FunctionExecutor("lithops", job=job, workers=2) as fexec:
        pids = fexec.get_result(fexec.map(square_into, [2, 3]))
        assert os.getpid() not in pids
        with pytest.raises(KeyError, match="part 5 is missing"):
            fexec.call_async(fails, 5).result()
        blob = os.urandom(2 * MiB)  # over Lithops' inline data: by reference
        assert fexec.call_async(echo_size, (blob,)).result() == bytes(reversed(blob))
    assert job.get("sq/3") == b"9"


def numbers(seed: int) -> list[tuple[int, None]]:
    import random

    rng = random.Random(seed)
    return [(rng.randrange(1_000_000), None) for _ in range(500)]


def sorted_keys(records: list[tuple[int, None]]) -> list[int]:
    return sorted(k for k, _ in records)


def test_a_sampled_range_partitioner_makes_a_global_sort(fexec: pls.FunctionExecutor) -> None:
    sample = [k for seed in range(3) for k, _ in numbers(seed)[:50]]
    partitioner = pls.RangePartitioner.from_sample(sample, 4)
    assert len(partitioner.boundaries) == 3
    parts = fexec.get_result(fexec.map_shuffle_reduce(
        numbers, range(6), sorted_keys, reducers=4, partition=partitioner, timeout=60,
    ))  # fmt: skip
    merged = [k for part in parts for k in part]
    assert merged == sorted(k for seed in range(6) for k, _ in numbers(seed))
    assert all(len(p) > 0 for p in parts)  # the sample spread the keys over every reducer


def raw_parts(m: int) -> list[bytes]:
    return [f"m{m}r{r};".encode() for r in range(3)]


def joined(parts: list[bytes]) -> bytes:
    return b"".join(parts)


def test_a_raw_shuffle_passes_parts_through_in_mapper_order(fexec: pls.FunctionExecutor) -> None:
    futures = fexec.map_shuffle_reduce(raw_parts, range(4), joined, reducers=3, raw=True)
    assert fexec.get_result(futures) == [
        b"".join(f"m{m}r{r};".encode() for m in range(4)) for r in range(3)
    ]
    with pytest.raises(ConfigError, match="3 parts, not 2"):
        fexec.get_result(fexec.map_shuffle_reduce(
            lambda m: [b"a", b"b"], range(1), joined, reducers=3, raw=True, timeout=60,
        ))  # fmt: skip
