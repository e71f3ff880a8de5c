"""The sort's shuffle through plain files: the baseline of part d's co-located sort.

:class:`FileShuffle` keeps every partition in a file of its own in a fresh directory (on
``/dev/shm`` by default, so memory against memory): put = ``open`` + ``write(2)`` until the
whole partition is written; take = ``read(2)`` of the whole file into one preallocated buffer,
then ``unlink`` (the delete-after-read of the other stores). This is what a job on one host
could do without any store at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..workloads.sort import ShuffleStore

__all__ = ["FileShuffle"]


class FileShuffle(ShuffleStore):
    """Partitions as files in a temporary directory under ``parent``; :meth:`cleanup` removes
    the directory. Pickled to the sort's workers as the directory's path."""

    name = "files on /dev/shm"

    def __init__(self, parent: str = "/dev/shm", *, prefix: str = "pocket-bench-files-") -> None:
        self.root = tempfile.mkdtemp(prefix=prefix, dir=parent)
        if parent != "/dev/shm":
            self.name = f"files in {parent}"

    def path(self, key: str) -> str:
        """The file of ``key`` (``/`` in keys becomes ``%2F``: one flat directory)."""
        return os.path.join(self.root, key.replace("%", "%25").replace("/", "%2F"))

    def put(self, key: str, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        fd = os.open(self.path(key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        finally:
            os.close(fd)

    def take(self, key: str) -> bytearray:
        path = self.path(key)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise KeyError(key) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            view = memoryview(buf)
            done = 0
            while done < size:
                n = f.readinto(view[done:])  # FileIO.readinto: one read(2)
                if not n:
                    raise OSError(f"{path}: file shrank while read ({done} of {size} bytes)")
                done += n
            view.release()
        os.unlink(path)
        return buf

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
