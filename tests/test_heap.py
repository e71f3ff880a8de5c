"""The C heap: once a client (or node) is made, buffers freed are reused, not faulted in again.

Each check runs in a fresh interpreter, since the thresholds are a property of the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="the thresholds are glibc's",
)

#: What reading a batch of a hundred 16 KiB values allocates and frees: the answer, a copy of
#: it, and the values; done again and again, with the page faults of the repeats counted.
_BATCH = """
import json, resource, sys
{setup}
def batch():
    body = bytearray(1600 * 1024)
    copy = bytes(body)
    return [copy[i : i + 16384] for i in range(0, len(copy), 16384)]
for _ in range(5):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    batch()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
print(json.dumps({{"tuned": tuned, "faults": faults}}))  # tuned: what the setup says
"""

_CLIENT = """
import pocketlib
pocketlib.Client(["127.0.0.1:9"]).close()  # made, never connected
tuned = None
"""


def _run(setup: str, **env: str) -> dict[str, float]:
    ours = ("GLIBC_TUNABLES", "POCKET_TUNE_MALLOC")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ours}
    out = subprocess.run(
        [sys.executable, "-c", _BATCH.format(setup=setup)], env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout)
    return result


def test_a_client_keeps_freed_buffers_for_the_next_batch() -> None:
    # The batch touches about 800 pages; reused, they are not faulted in again (with glibc's
    # own thresholds, about 1,100 faults a batch on the machine this was written on).
    got = _run(_CLIENT)
    assert got["faults"] < 40, got


def test_a_process_that_set_its_own_thresholds_is_left_alone() -> None:
    setup = "import pocketlib.heap; tuned = pocketlib.heap.tune()"
    assert _run(_CLIENT + setup, POCKET_TUNE_MALLOC="0")["tuned"] is False
    assert _run(setup, MALLOC_TRIM_THRESHOLD_="131072")["tuned"] is False
    assert _run(setup, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")["tuned"] is False
    assert _run(setup, GLIBC_TUNABLES="glibc.cpu.x86_shstk=on")["tuned"] is True


def test_a_node_tunes_its_heap_when_it_starts() -> None:
    setup = (
        "from pocketlib.node.server import StorageNode\n"
        "from pocketlib.tiers.dram import DramTier\n"
        "node = StorageNode(DramTier(1 << 20, shared=False), '127.0.0.1', 0).start()\n"
        "tuned = None\n"
    )
    got = _run(setup)
    assert got["faults"] < 40, got
