"""MappedTier: values in one memory mapping, placed by the arena allocator.

The DRAM tier maps a shared-memory file and the NVMe tier a preallocated file on disk; both
receive values straight into the mapping and send them straight out of it. This class holds
what they share: the allocator, the views, and releasing the mapping on close.
"""

from __future__ import annotations

import contextlib
import mmap
from typing import Any

from .allocator import Allocator
from .index import IndexedTier

__all__ = ["MappedTier"]

Extents = list[tuple[int, int]]


class MappedTier(IndexedTier):
    """An IndexedTier over ``mapping``; a location is a list of ``(start, length)`` extents."""

    #: The file behind the mapping, if another process on this host may map it too.
    shared_path: str | None = None

    def __init__(self, mapping: mmap.mmap, allocator: Allocator) -> None:
        super().__init__(allocator.capacity)
        self._allocator = allocator
        self._map = mapping
        self._view = memoryview(mapping)
        self._ro_view = self._view.toreadonly()

    def _medium_allocate(self, nbytes: int) -> tuple[Any, int] | None:
        alloc = self._allocator
        start = alloc.allocate(nbytes)
        if start is not None:  # the common case: one block
            return ([(start, nbytes)] if nbytes else []), -(-nbytes // alloc.align) * alloc.align
        extents = alloc.allocate_extents(nbytes)
        if extents is None:
            return None
        return extents, sum(alloc.rounded(length) for _, length in extents)

    def _medium_free(self, loc: Any, nbytes: int) -> None:
        for start, length in loc:
            self._allocator.free(start, length)

    def _medium_join(self, locs: list[Any]) -> Any:
        return [extent for loc in locs for extent in loc]

    def _medium_bytes(self, loc: Any, nbytes: int) -> bytes:
        if len(loc) == 1:  # (the usual case, without the list of views)
            start, length = loc[0]
            return self._ro_view[start : start + length].tobytes()
        return b"".join(self._ro_view[start : start + length] for start, length in loc)

    def _medium_buffers(self, loc: Any, nbytes: int, writable: bool) -> list[memoryview]:
        view = self._view if writable else self._ro_view
        if len(loc) == 1:
            start, length = loc[0]
            return [view[start : start + length]]
        return [view[start : start + length] for start, length in loc]

    @property
    def fragmentation(self) -> float:
        """1 - largest free block / free bytes: 0 when all free space is one block."""
        with self._lock:
            free = self._allocator.free_bytes
            return 0.0 if free == 0 else 1.0 - self._allocator.largest_free / free

    def close(self) -> None:
        # Views handed out may still be alive in other threads; the mapping is freed when the
        # last of them is dropped, so release only our own.
        self._ro_view.release()
        self._view.release()
        with contextlib.suppress(BufferError):
            self._map.close()
