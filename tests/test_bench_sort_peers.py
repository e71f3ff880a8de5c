"""The sort benchmark against Lithops with Redis runs both programs and they agree."""

from __future__ import annotations

import shutil

import pytest

from pocketlib.bench import sort_peers


@pytest.mark.slow
def test_both_sorts_agree_on_a_small_input(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lithops")
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    assert sort_peers.main(["--size", "4MiB", "--mappers", "2", "--reducers", "2"]) == 0
    out = capsys.readouterr().out
    assert "pocketlib " in out
    assert "lithops+redis" in out
    assert "ratios: shuffle" in out
