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

from ..errors import ConfigError
from .allocator import Allocator
from .base import Capabilities, TierDriver
from .mapped import MappedTier

__all__ = ["DramTier", "remove_stale_arenas"]

_SHM_DIR = "/dev/shm"


def remove_stale_arenas(directory: str = _SHM_DIR) -> int:
    """Unlink arenas of nodes that died without cleaning up (``kill -9``); returns how many.

    An arena is named after its node's PID; one whose process no longer exists would hold its
    memory until reboot. A PID that exists (or belongs to another user) is left alone.
    """
    removed = 0
    for name in os.listdir(directory):
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "pocket" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed += 1
        except OSError:
            pass  # alive, but not ours to signal
    return removed


class DramTier(MappedTier):
    """Values in one shared-memory arena of ``capacity`` bytes."""

    name = "dram"
    capabilities = Capabilities(shared_memory=True, persistent=False, zero_copy=True)

    def __init__(self, capacity: int, *, shared: bool = True, align: int = 64) -> None:
        if capacity <= 0:
            raise ConfigError("a DRAM tier needs a capacity above zero")
        self.shm_path: str | None = None
        if shared and os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK):
            remove_stale_arenas()
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
                mapping = mmap.mmap(fd, capacity)
            finally:
                os.close(fd)
            self.shm_path = self.shared_path = path
        else:
            mapping = mmap.mmap(-1, capacity)
        super().__init__(mapping, Allocator(capacity, align))

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        if path is not None:
            raise ConfigError("the dram tier takes no --path")
        return cls(capacity)

    def close(self) -> None:
        if self.shm_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.shm_path)
            self.shm_path = self.shared_path = None
        super().close()
