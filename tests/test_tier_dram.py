"""The DRAM tier's shared-memory arenas: what a node leaves behind is cleaned up."""

from __future__ import annotations

import os
from pathlib import Path

from pocketlib.tiers.dram import remove_stale_arenas


def test_a_new_dram_tier_removes_arenas_of_dead_nodes(tmp_path: Path) -> None:
    dead = tmp_path / "pocket-999999999-deadbeef"  # no such PID
    alive = tmp_path / f"pocket-{os.getpid()}-cafecafe"
    other = tmp_path / "not-ours"
    for f in (dead, alive, other):
        f.write_bytes(b"x")
    assert remove_stale_arenas(str(tmp_path)) == 1
    assert not dead.exists()
    assert alive.exists()
    assert other.exists()
