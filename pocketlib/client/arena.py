"""A node's tier file mapped into this process, and read-only views of values in it.

The pure half of the co-located path (no sockets): :class:`SharedArena` copies, hashes and
writes extents of the mapped file; :func:`open_arena` maps a node's file only when it is this
host's (path, device, inode and boot id all match); :class:`SharedBuffer` is a view handed to
the caller, valid until released. :mod:`pocketlib.client.shared` moves values through it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ChecksumError
from ..protocol import Hasher, checksum
from ..transport import boot_id

_T = TypeVar("_T")
#: Values from this size are hashed on a second thread while they are copied.
_PARALLEL_HASH_MIN = 4 * 1024 * 1024
#: madvise(MADV_POPULATE_WRITE), Linux 5.14 (the mmap module may have no name for it; 23 is
#: its number in the generic Linux headers that x86-64 and arm64 use).
_POPULATE_WRITE: int | None = getattr(
    mmap,
    "MADV_POPULATE_WRITE",
    23 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None,
)
#: The arena is prefaulted for writing in chunks of this size, each once per process.
_PREFAULT_CHUNK = 64 * 1024

__all__ = ["SharedArena", "SharedBuffer", "open_arena"]


class SharedArena:
    """A node's tier file, mapped into this process."""

    def __init__(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.view = memoryview(self._map)
        self.path = path
        self._size = size
        # Chunks this process has written to (their pages are mapped writable here).
        self._written = bytearray(-(-size // _PREFAULT_CHUNK))
        self._populate = _POPULATE_WRITE

    def read_into(self, extents: list[tuple[int, int]], target: memoryview) -> None:
        """Copy the value at ``extents`` into ``target`` (which holds exactly its size)."""
        pos = 0
        view = self.view
        for offset, length in extents:
            target[pos : pos + length] = view[offset : offset + length]
            pos += length

    def read(self, extents: list[tuple[int, int]]) -> bytes:
        """A copy of the value at ``extents``."""
        if len(extents) == 1:
            offset, length = extents[0]
            return self.view[offset : offset + length].tobytes()
        return b"".join(self.view[o : o + n] for o, n in extents)

    def hash_of(self, extents: list[tuple[int, int]]) -> int:
        """The checksum of the value at ``extents``, read straight from the mapping."""
        if len(extents) == 1:
            offset, length = extents[0]
            return checksum(self.view[offset : offset + length])
        hasher = Hasher()
        for offset, length in extents:
            hasher.update(self.view[offset : offset + length])
        return hasher.intdigest()

    def copy_verified(
        self, extents: list[tuple[int, int]], copy: Callable[[], _T], expected: int
    ) -> _T:
        """Run ``copy`` (of the value at ``extents``) and check the value's checksum.

        A large value is hashed from the mapping on a second thread while this one copies:
        the hash releases the GIL, the copy holds it, and a leased value cannot change, so the
        two passes overlap on two cores instead of following each other.
        """
        size = sum(n for _, n in extents)
        if size < _PARALLEL_HASH_MIN:
            result = copy()
            digest = self.hash_of(extents)
        else:
            found: list[int] = []
            worker = threading.Thread(target=lambda: found.append(self.hash_of(extents)))
            worker.start()
            try:
                result = copy()
            finally:
                worker.join()
            digest = found[0] if found else -1
        if digest != expected:
            raise ChecksumError("checksum mismatch reading a value from shared memory")
        return result

    def write(self, extents: list[tuple[int, int]], data: memoryview) -> None:
        """Copy ``data`` into reserved ``extents``."""
        pos = 0
        view = self.view
        for offset, length in extents:
            self._prefault(offset, length)
            view[offset : offset + length] = data[pos : pos + length]
            pos += length

    def _prefault(self, offset: int, length: int) -> None:
        """Map the pages under ``[offset, offset + length)`` writable in one system call, the
        first time this process writes to their chunks. The node's pages are not mapped in
        this process until it touches them, and a first write costs a fault per 4 KiB page
        (1.7 us each measured on a VM, 0.6 us when prefaulted together)."""
        first, end = offset // _PREFAULT_CHUNK, -(-(offset + length) // _PREFAULT_CHUNK)
        written, populate = self._written, self._populate
        if populate is None or written.find(0, first, end) < 0:
            return
        start = first * _PREFAULT_CHUNK
        try:
            self._map.madvise(populate, start, min(end * _PREFAULT_CHUNK, self._size) - start)
        except (OSError, ValueError):
            self._populate = None  # a kernel before 5.14: fault page by page, as before
            return
        written[first:end] = b"\x01" * (end - first)

    def close(self) -> None:
        """Unmap (views handed out keep the mapping alive until they are released)."""
        with contextlib.suppress(BufferError):
            self.view.release()
            self._map.close()


def open_arena(info: dict[str, Any]) -> SharedArena | None:
    """Map the node's tier file if it is this host's and this process may; else None."""
    if os.environ.get("POCKET_SHARED_MEMORY", "1") == "0":
        return None
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # no /dev/shm there, nor a node's host
        return None
    path = info.get("path")
    if not path or info.get("boot_id") != boot_id() or not boot_id():
        return None
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) != (info.get("dev"), info.get("ino")):
            return None  # the same name on another host, or in another mount namespace
        return SharedArena(path, int(info["size"]))
    except (OSError, ValueError, KeyError):
        return None


class SharedBuffer:
    """A read-only view of a stored value, valid until :meth:`release` (or ``with`` exits).

    While it is held, the node keeps the value's space from being reused, so the bytes stay
    those of the value that was read, even if its key is deleted or overwritten meanwhile.
    """

    def __init__(self, view: memoryview, release: Callable[[], None] | None = None) -> None:
        self.view = view
        self._release = release

    def __len__(self) -> int:
        return len(self.view)

    def __bytes__(self) -> bytes:
        return self.view.tobytes()

    def __buffer__(self, flags: int) -> memoryview:  # the buffer protocol (Python 3.12+)
        return self.view

    @property
    def leased(self) -> bool:
        """Whether this is the node's own memory, held until released (not a copy)."""
        return self._release is not None

    def release(self) -> None:
        """Let the node reuse the value's space. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            self.view.release()
            release()

    def __enter__(self) -> SharedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()
