"""The examples run, and say what they did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def test_serverless_job() -> None:
    out = run("serverless_job.py")
    assert "shuffled 4194304 bytes; left behind: 0 objects" in out
    assert "'requests'" in out  # the bill came back with the deregistration


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "hello, ephemeral world" in out
    assert "100 parts read back" in out


def test_distributed_compile() -> None:
    out = run("distributed_compile.py")
    assert "compiled 25 files in parallel functions" in out
    assert ": correct; objects left in the job: 0" in out


def test_distributed_compile_in_local_lambdas() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "distributed_compile.py"),
                           "--backend", "lambda", "--files", "6"], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert "compiled 7 files in parallel functions and linked them" in done.stdout
    assert "(lambda)" in done.stdout
    assert ": correct;" in done.stdout


def test_video_analytics() -> None:
    pytest.importorskip("av")
    out = run("video_analytics.py")
    assert "decoded 192 frames of 8 segments" in out
    assert "the square was in view during frames [(38, 76), (115, 153)]: as drawn" in out
    assert "frames left in the job: 0" in out


def test_tpch_query_matches_a_single_process_run() -> None:
    pytest.importorskip("pyarrow")
    done = subprocess.run([sys.executable, str(EXAMPLES / "tpch_query.py"), "--scale", "0.01",
                           "--parts", "3", "--reducers", "3", "--workers", "2"],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    out = done.stdout
    assert "customer 1,500 rows, orders 15,000 rows" in out
    assert "stages 2-3: 6 scans shuffled their rows by orderkey to 3 joins" in out
    assert out.count("  order ") == 10
    assert "in one process: identical; shuffle objects left: 0" in out
