"""The C heap of a process that moves values: freed buffers are kept for the next ones.

Every value a client gets is a fresh ``bytes``, and every frame a node or client reads is a
fresh buffer. glibc's malloc hands a buffer above ``M_MMAP_THRESHOLD`` back to the kernel when
it is freed, and trims free memory above ``M_TRIM_THRESHOLD`` off the top of the heap (both
128 KiB when a process starts), so the next buffer of that size is faulted in again page by
page. Under a hypervisor a page fault costs about 2 µs, 0.5 ms per MiB: more than copying the
MiB. glibc raises both thresholds on its own once a large buffer is freed (to at most 32 and
64 MiB), but a process that only ever moves mid-size buffers, such as the 1.6 MB answer to a
``get_many`` of a hundred 16 KiB values, stays below that rule and keeps paying: that batch
took 2.5 times as long as with the thresholds raised.

:func:`tune` sets the two thresholds where glibc's own rule ends, from the start: buffers up to
32 MiB come from the heap, and up to 64 MiB of free heap is kept for reuse rather than given
back. The node calls it when it starts and the client when it is made. It is skipped where
malloc is not glibc's, where the process already set either threshold through glibc's
environment variables, and where ``POCKET_TUNE_MALLOC=0`` asks for the process's own malloc
settings to be left alone.
"""

from __future__ import annotations

import functools
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune"]

#: Buffers up to this size come from the heap (glibc's largest dynamic threshold on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free heap kept for reuse before any of it is given back (twice the above, as glibc does).
TRIM_THRESHOLD = 64 << 20

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_GLIBC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


@functools.cache  # (two threads racing to the first call both set the same values)
def tune() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; whether they are set.

    A no-op (False) off glibc, when the process set its own malloc thresholds, or with
    ``POCKET_TUNE_MALLOC=0``."""
    if os.environ.get("POCKET_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    chosen = any(v in os.environ for v in _GLIBC_VARIABLES)
    if chosen or any(t in tunables for t in _GLIBC_TUNABLES):
        return False  # the process chose its own thresholds
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # (here: ``import pocketlib`` stays light)

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it; musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting either one ends glibc's own adjustment of both.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
