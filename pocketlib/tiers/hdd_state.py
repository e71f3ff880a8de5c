"""What every part of the HDD tier shares (see :mod:`pocketlib.tiers.hdd` for the layout).

:class:`HddState` is the base of the driver's mixins: the tier's lock (:class:`Locked`), the
index of object files (an :class:`~pocketlib.tiers.objindex.ObjectIndex` of :class:`File`, and
which names in ``objects/`` are taken), and how a file leaves it: unlinked when its object is
deleted or replaced (a large one kept open for the tier's closing thread, so that freeing its
pages waits for no one), or moved to ``corrupt/`` when it is found damaged.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass

from .objindex import Entry, ObjectIndex

__all__ = ["File", "HddState", "Locked", "Stored"]

#: Freeing the inode of a large, still dirty file costs milliseconds (its pages are dropped
#: then); a delete or overwrite of a value this large keeps the old file open, and a thread of
#: the tier closes it, so neither the tier's lock nor the caller waits for that. At most this
#: many files are held at once (beyond, the unlink frees the file itself).
_DEFER_FREE_MIN = 1 << 20
_DEFER_FREE_MAX = 256


@dataclass(slots=True, eq=False)
class File:
    """Where an object is: its file in ``objects/``."""

    name: str
    #: Checksum the tier computed over the value as it wrote it (what reads are checked with).
    data_checksum: int
    #: (inode, size, mtime, ctime) of the file when its value last matched its checksum.
    verified: tuple[int, int, int, int] | None = None


Stored = Entry[File]


class Locked:
    """The tier's lock, as a context manager that on release hands the files that
    :meth:`HddState._defer_free` kept open to the tier's closing thread."""

    __slots__ = ("_tier",)

    def __init__(self, tier: HddState) -> None:
        self._tier = tier

    def __enter__(self) -> None:
        self._tier._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        tier = self._tier
        fds = tier._deferred
        if fds:
            tier._deferred = []
        tier._lock.release()
        for fd in fds:
            if tier._closed:
                os.close(fd)
            else:
                tier._to_close.put(fd)


class HddState:
    """The state the HDD tier's parts share (the driver's ``__init__`` sets it), and the
    changes to its index that touch files (every method: lock held, or the tier starting)."""

    _objects_dir: str
    _corrupt_dir: str
    _lock: threading.Lock
    _locked: Locked
    #: Files kept open under the lock, handed to the closing thread when it is released.
    _deferred: list[int]
    _to_close: queue.SimpleQueue[int | None]
    _closer: threading.Thread | None
    _index: ObjectIndex[File]
    #: File name -> object: which names in objects/ are taken.
    _names: dict[str, Stored]
    _closed: bool

    def _insert(self, stored: Stored) -> None:
        """Index ``stored``; the object it replaces (same key) is unlinked, file and all."""
        old = self._index.insert(stored)
        if old is not None:
            self._delete(old)
        self._names[stored.loc.name] = stored

    def _delete(self, stored: Stored) -> None:
        """An object leaves the index (deleted or replaced): its name is free, its file
        unlinked (leases keep it readable)."""
        del self._names[stored.loc.name]
        self._delete_file(stored)

    def _delete_file(self, stored: Stored) -> None:
        # No POSIX_FADV_DONTNEED first: on a file still dirty it starts writing the value to
        # disk, only to free it; unlinking drops its pages unwritten (docs/tiers.md).
        self._defer_free(stored.loc.name, stored.meta.size)
        try:
            os.unlink(os.path.join(self._objects_dir, stored.loc.name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            print(
                f"pocket hdd tier: cannot remove the file of {stored.key!r} in job "
                f"{stored.job!r}: {exc.strerror}; a restart keeps the newest value of the key",
                file=sys.stderr,
            )

    def _defer_free(self, name: str, size: int) -> None:
        """Keep a large file that is about to be unlinked open, for the closing thread: the
        last close, not the unlink, then frees its pages and blocks."""
        if size < _DEFER_FREE_MIN or self._closed:
            return
        if len(self._deferred) + self._to_close.qsize() >= _DEFER_FREE_MAX:
            return
        with contextlib.suppress(OSError):
            path = os.path.join(self._objects_dir, name)
            self._deferred.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        if self._closer is None:
            self._closer = threading.Thread(
                target=_close_files, args=(self._to_close,), name="pocket-hdd-closer", daemon=True
            )
            self._closer.start()

    def _move_aside(self, name: str, reason: str) -> None:
        """Move objects/``name`` to corrupt/ and say so."""
        target = os.path.join(self._corrupt_dir, f"{name}.{time.time_ns()}")
        try:
            os.rename(os.path.join(self._objects_dir, name), target)
        except OSError as exc:
            reason += f" (and it could not be moved aside: {exc.strerror})"
        print(
            f"pocket hdd tier: {os.path.join(self._objects_dir, name)} is not served: {reason}; "
            f"moved to {self._corrupt_dir}",
            file=sys.stderr,
        )


def _close_files(fds: queue.SimpleQueue[int | None]) -> None:
    """The closing thread: close each file until told to stop."""
    while (fd := fds.get()) is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
