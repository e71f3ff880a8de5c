"""Values being written to the HDD tier, before commit renames them into ``objects/``.

A reservation's space is a :class:`Part`: a memory buffer (while the tier's memory budget
allows), or a writable mapping of a preallocated temporary file in ``tmp/``, so large values,
and values larger than memory, go straight into the page cache. :func:`write_value` writes
parts, in order, into one temporary file after the header's space and hashes them: buffered
parts with pwrite, mapped ones copied in the kernel (copy_file_range) from their files, so a
value larger than memory never passes through the process.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
from dataclasses import dataclass

from ..errors import PocketError
from ..protocol import Hasher
from .hdd_files import HEADER_SIZE, os_failure, pwrite_all

__all__ = ["Part", "TempFiles", "discard", "memory_of", "write_value"]

_COPY_CHUNK = 1 << 30


@dataclass(slots=True, eq=False)
class Part:
    """One reservation's space: a memory buffer, a mapped temporary file, or (made by join) a
    temporary file already written and hashed, open for commit."""

    size: int
    buf: bytearray | None = None
    mm: mmap.mmap | None = None
    path: str | None = None
    view: memoryview | None = None
    fd: int | None = None
    data_checksum: int = 0
    #: Why a join could not write the value (commit raises it).
    error: PocketError | None = None

    def close(self) -> None:
        """Drop the buffer or mapping (views the caller still holds keep the mapping alive)."""
        if self.view is not None:
            with contextlib.suppress(BufferError):
                self.view.release()
        if self.mm is not None:
            with contextlib.suppress(BufferError):
                self.mm.close()
        self.view = self.mm = self.buf = None


class TempFiles:
    """Creates uniquely named temporary files in ``tmp_dir``."""

    def __init__(self, tmp_dir: str) -> None:
        self.dir = tmp_dir
        self._seq = itertools.count()

    def create(self) -> tuple[int, str]:
        """A new file, open for reading and writing, and its path."""
        while True:
            path = os.path.join(self.dir, f"{os.getpid()}-{next(self._seq)}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise os_failure(exc, "cannot create a temporary file") from exc
            return fd, path

    def new_part(self, nbytes: int, in_memory: bool) -> Part:
        """Space for a value of ``nbytes``: a buffer if ``in_memory``, else a mapped file."""
        if nbytes == 0:
            return Part(0)
        if in_memory:
            buf = bytearray(nbytes)
            return Part(nbytes, buf=buf, view=memoryview(buf))
        # Beyond the memory budget: a preallocated temporary file, mapped. Preallocated, so a
        # disk that fills up fails here rather than with SIGBUS on a write to the mapping.
        fd, path = self.create()
        try:
            os.posix_fallocate(fd, 0, HEADER_SIZE + nbytes)
            mm = mmap.mmap(fd, HEADER_SIZE + nbytes)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise os_failure(exc, "cannot reserve space for a value") from exc
        os.close(fd)  # the mapping holds the file
        with memoryview(mm) as whole:
            view = whole[HEADER_SIZE:]
        return Part(nbytes, mm=mm, path=path, view=view)


def write_value(parts: list[Part], temps: TempFiles, sync: bool) -> tuple[int, str, int]:
    """Write the parts' bytes, in order, to one temporary file after the header's space;
    returns the open file, its path and the checksum of the bytes written."""
    hasher = Hasher()
    first = parts[0] if parts else None
    if first is not None and first.mm is not None and first.path is not None:
        # Already in a file of its own: the object is that file, later parts appended.
        path = first.path
        assert first.view is not None
        hasher.update(first.view)
        first.close()
        first.path = None  # it becomes the object: not to be removed with the parts
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise os_failure(exc, "cannot reopen a temporary file") from exc
        offset = HEADER_SIZE + first.size
        rest = parts[1:]
    else:
        fd, path = temps.create()
        offset = HEADER_SIZE
        rest = parts
    try:
        for part in rest:
            if part.size == 0:
                continue
            assert part.view is not None
            hasher.update(part.view)
            if part.buf is not None:
                pwrite_all(fd, part.view, offset)
            else:
                _append_file(part, fd, offset)
            offset += part.size
            part.close()
            if part.path is not None:
                os.unlink(part.path)  # its bytes are in the object now: free its blocks
                part.path = None
        if sync:
            os.fdatasync(fd)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise os_failure(exc, "cannot write a value") from exc
        raise
    return fd, path, hasher.intdigest()


def _append_file(part: Part, fd: int, offset: int) -> None:
    """Copy a mapped part's value from its temporary file into ``fd`` at ``offset``: in the
    kernel (copy_file_range), so a value larger than memory never passes through ours."""
    assert part.path is not None
    assert part.view is not None
    src = os.open(part.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        done = 0
        while done < part.size:
            try:
                n = os.copy_file_range(
                    src, fd, min(part.size - done, _COPY_CHUNK),
                    HEADER_SIZE + done, offset + done,
                )  # fmt: skip
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                n = 0
            if n == 0:  # not supported here: write it from the mapping instead
                pwrite_all(fd, part.view[done:], offset + done)
                return
            done += n
    finally:
        os.close(src)


def memory_of(parts: list[Part]) -> int:
    return sum(p.size for p in parts if p.buf is not None)


def discard(parts: list[Part]) -> None:
    for part in parts:
        part.close()
        if part.fd is not None:
            os.close(part.fd)
            part.fd = None
        if part.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(part.path)
            part.path = None
