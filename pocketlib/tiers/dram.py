"""DRAM tier: one shared-memory arena of fixed capacity.

The arena is a file in /dev/shm mapped into the node, so a client on the same host can later
map the same pages (the co-located fast path); where /dev/shm is missing (AWS Lambda, some
containers) it falls back to anonymous memory. Values are received straight into the arena and
sent straight out of it; the :class:`~pocketlib.tiers.allocator.Allocator` reuses freed space.

The arena's pages are only touched when written, so an idle node with a large capacity costs
little memory; the node refuses at start if /dev/shm cannot hold the capacity, because a write
to a tmpfs that is full kills the process (SIGBUS) instead of failing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from typing import Any

from ..errors import ConfigError
from .allocator import Allocator
from .base import Capabilities, TierDriver
from .index import IndexedTier

__all__ = ["DramTier"]

_SHM_DIR = "/dev/shm"


class DramTier(IndexedTier):
    """Values in one shared-memory arena of ``capacity`` bytes."""

    name = "dram"
    capabilities = Capabilities(shared_memory=True, persistent=False, zero_copy=True)

    def __init__(self, capacity: int, *, shared: bool = True, align: int = 64) -> None:
        if capacity <= 0:
            raise ConfigError("a DRAM tier needs a capacity above zero")
        self._allocator = Allocator(capacity, align)
        super().__init__(self._allocator.capacity)
        self.shm_path: str | None = None
        if shared and os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK):
            st = os.statvfs(_SHM_DIR)
            if st.f_bavail * st.f_frsize < capacity:
                free = st.f_bavail * st.f_frsize
                raise ConfigError(
                    f"{_SHM_DIR} has {free} bytes free, less than the capacity {capacity}; "
                    "lower --capacity or enlarge /dev/shm"
                )
            path = os.path.join(_SHM_DIR, f"pocket-{os.getpid()}-{secrets.token_hex(4)}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, capacity)
                self._map = mmap.mmap(fd, capacity)
            finally:
                os.close(fd)
            self.shm_path = path
        else:
            self._map = mmap.mmap(-1, capacity)
        self._view = memoryview(self._map)
        self._ro_view = self._view.toreadonly()

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        if path is not None:
            raise ConfigError("the dram tier takes no --path")
        return cls(capacity)

    def _medium_allocate(self, nbytes: int) -> tuple[Any, int] | None:
        alloc = self._allocator
        start = alloc.allocate(nbytes)
        if start is not None:  # the common case: one block
            return ([(start, nbytes)] if nbytes else []), -(-nbytes // alloc.align) * alloc.align
        extents = self._allocator.allocate_extents(nbytes)
        if extents is None:
            return None
        charged = sum(self._allocator.rounded(length) for _, length in extents)
        return extents, charged

    def _medium_free(self, loc: Any, nbytes: int) -> None:
        for start, length in loc:
            self._allocator.free(start, length)

    def _medium_join(self, locs: list[Any]) -> Any:
        return [extent for loc in locs for extent in loc]

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
        if self.shm_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.shm_path)
            self.shm_path = None
        # Views handed out may still be alive in other threads; the mapping is freed when the
        # last of them is dropped, so release only our own.
        self._ro_view.release()
        self._view.release()
        with contextlib.suppress(BufferError):
            self._map.close()
