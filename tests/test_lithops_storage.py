"""pocketlib as a Lithops storage backend: Lithops' own storage tests, unmodified.

The tests ship in the lithops wheel (``lithops.tests.test_storage``) and take the backend to
test with ``--storage``; here they run with ``--storage pocket`` and localhost compute against
a LocalCluster, in a pytest of their own (their conftest is Lithops').
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pocketlib
from pocketlib import JobHints, LocalCluster

lithops = pytest.importorskip("lithops")


@pytest.fixture(scope="module")
def job() -> Iterator[pocketlib.Job]:
    from pocketlib.serverless.lithops_storage import install_backend

    install_backend()
    cluster = LocalCluster(node_capacity="64MiB", autoscale=False, tick=0.2)
    with cluster, cluster.client() as client:
        j = client.register_job("lithops", JobHints(capacity="32MiB"))
        yield j
        j.deregister()


def lithops_config(tmp_path: Path, job: pocketlib.Job) -> Path:
    config = {
        "lithops": {"backend": "localhost", "storage": "pocket"},
        "localhost": {"runtime": sys.executable, "worker_processes": 2},
        "pocket": {"ticket": job.ticket.to_json()},
    }
    path = tmp_path / "lithops.yaml"
    path.write_text(json.dumps(config))  # (JSON is YAML)
    return path


def test_lithops_own_storage_tests_pass_with_storage_pocket(
    tmp_path: Path, job: pocketlib.Job
) -> None:
    config = lithops_config(tmp_path, job)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(lithops.__file__).parent / "tests" /
         "test_storage.py"), "-q", "-p", "no:cacheprovider", "--storage", "pocket",
         "--backend", "localhost", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed is not None
    assert int(passed.group(1)) >= 13  # every storage test of lithops 3.8
    assert "failed" not in run.stdout
    assert "skipped" not in run.stdout
    assert list(job.list("pocket/__lithops.test")) == []  # they cleaned up after themselves


def test_functions_use_the_backend_and_pocketlib_directly(
    tmp_path: Path, job: pocketlib.Job
) -> None:
    from lithops.storage.utils import StorageNoSuchKeyError

    config = json.loads(lithops_config(tmp_path, job).read_text())
    storage = lithops.Storage(config=config)
    storage.put_object("pocket", "in/0", b"hello lithops")
    assert job.get("pocket/in/0") == b"hello lithops"  # a bucket is a key prefix of the job
    assert storage.get_object("pocket", "in/0", extra_get_args={"Range": "bytes=6-"}) == (
        b"lithops"
    )
    with pytest.raises(StorageNoSuchKeyError):
        storage.get_object("pocket", "missing")
    fexec = lithops.FunctionExecutor(config=config)
    fexec.map(_shout, [("in/0", job.ticket.to_json())])
    assert fexec.get_result() == [len(b"HELLO LITHOPS")]
    fexec.clean()
    assert job.get("out/0") == b"HELLO LITHOPS"


def _shout(key: str, ticket: str, storage: object) -> int:
    data = storage.get_object("pocket", key)  # type: ignore[attr-defined]
    out = pocketlib.attach(ticket)  # and pocketlib itself, with the ticket as an argument
    out.put("out/0", data.upper())
    return len(data)
