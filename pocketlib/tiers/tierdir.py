"""The directory of a file-backed tier (nvme, hdd): made if new, and locked to one node.

The directory itself may be new, but not its parent: a missing parent is more likely an
unmounted disk than a wish for a fresh, empty tier. Two nodes over one directory would each
believe they own its space, so the first one holds an exclusive lock on ``DIR/lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..errors import ConfigError

__all__ = ["check_parent", "lock_dir", "unlock_dir"]


def check_parent(path: str, tier: str) -> None:
    """ConfigError if ``path`` is missing and so is its parent."""
    parent = os.path.dirname(path)
    if not os.path.lexists(path) and not os.path.isdir(parent):
        raise ConfigError(f"cannot use {path} for the {tier} tier: {parent} does not exist")


def lock_dir(path: str, tier: str) -> int:
    """Make ``path`` if it is new (its parent must exist) and lock it; the lock's descriptor."""
    check_parent(path, tier)
    try:
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use {path} for the {tier} tier: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"{path} is in use by another node") from None
    return fd


def unlock_dir(fd: int) -> None:
    """Let another node use the directory."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
