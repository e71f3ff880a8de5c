"""pocketlib for pyarrow: a filesystem whose input files are Arrow buffers over the stored value.

``pocketlib.arrow.filesystem(ticket=...)`` is a ``pyarrow.fs.PyFileSystem`` over
:class:`PocketHandler`, a handler of pocketlib's own (not fsspec's generic one). Opening a file
for reading gives a ``pa.BufferReader`` over the whole value: when the node is on this host,
the buffer *is* the node's memory (a leased, read-only view of its shared-memory tier, held
until the last Arrow buffer over it is freed), so Arrow IPC and Parquet readers slice it without
copying; otherwise a ``stat`` and one ``get_into`` read the value into Arrow's memory pool.
Output streams go through the atomic writer. Paths are ``<job>/<key>`` (pyarrow strips the
``pocket://`` scheme).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc

from ..errors import NotFoundError, RequestError
from ..filesystem import PocketFileSystem
from ..protocol import validate_key
from .buffers import arrow_buffer
from .shuffle import shuffle_read, shuffle_write

__all__ = [
    "PocketHandler",
    "dataset",
    "filesystem",
    "read_table",
    "shuffle_read",
    "shuffle_write",
    "write_dataset",
    "write_table",
]


def filesystem(
    ticket: str | Mapping[str, Any] | None = None,
    *,
    nodes: Sequence[str] | None = None,
    job: str | None = None,
    verify: bool = True,
) -> pafs.PyFileSystem:
    """A pyarrow filesystem over a job (arguments as :class:`PocketFileSystem`'s).

    ``verify=False`` maps files of a co-located node without checking them against their
    checksums (see :meth:`Job.get_buffer <pocketlib.client.job.Job.get_buffer>`): a zero-copy read
    then costs nothing per byte.
    """
    fs = PocketFileSystem(ticket, nodes=nodes, job=job)
    return pafs.PyFileSystem(PocketHandler(fs, verify=verify))


def _path(url: str) -> str:
    return url[len("pocket://") :] if url.startswith("pocket://") else url


def write_table(table: pa.Table, url: str, *, ticket: str | None = None) -> None:
    """Store ``table`` as one Arrow IPC file at ``pocket://<job>/<key>`` (one put, so a
    co-located :func:`read_table` maps it without a copy)."""
    fs = PocketFileSystem(ticket)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    fs.job.put(fs._key(_path(url)), sink.getvalue())


def read_table(url: str, *, ticket: str | None = None, verify: bool = True) -> pa.Table:
    """The Arrow IPC table at ``url``: over the node's memory when it is on this host
    (``verify`` as :func:`filesystem`'s)."""
    handler = PocketHandler(PocketFileSystem(ticket), verify=verify)
    return pa.ipc.open_file(handler.open_input_file(_path(url))).read_all()


def write_dataset(
    data: Any,
    url: str,
    *,
    format: str = "parquet",
    partitioning: Any = None,
    ticket: str | None = None,
    **kwargs: Any,
) -> None:
    """``pyarrow.dataset.write_dataset`` into ``pocket://<job>/<dir>`` (``partitioning``: a
    list of column names makes hive-style directories)."""
    import pyarrow.dataset as ds

    if isinstance(partitioning, list | tuple):
        schema = data.schema if hasattr(data, "schema") else None
        fields = [schema.field(name) for name in partitioning] if schema is not None else None
        partitioning = ds.partitioning(pa.schema(fields), flavor="hive") if fields else None
    ds.write_dataset(data, _path(url), format=format, partitioning=partitioning,
                     filesystem=filesystem(ticket), **kwargs)  # fmt: skip


def dataset(url: str, *, format: str = "parquet", partitioning: Any = "hive",
            ticket: str | None = None) -> Any:  # fmt: skip
    """``pyarrow.dataset.dataset`` over ``pocket://<job>/<dir>``."""
    import pyarrow.dataset as ds

    return ds.dataset(_path(url), format=format, partitioning=partitioning,
                      filesystem=filesystem(ticket))  # fmt: skip


class PocketHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """pyarrow's ``FileSystemHandler`` over a ``pocket://`` filesystem."""

    def __init__(self, fs: PocketFileSystem, *, verify: bool = True) -> None:
        self.fs = fs
        #: Whether input files mapped from a co-located node are checked against checksums.
        self.verify = verify

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PocketHandler) and other.fs == self.fs and other.verify == self.verify
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(PocketHandler, verify=self.verify), (self.fs,))

    def get_type_name(self) -> str:
        return "pocket"

    def normalize_path(self, path: str) -> str:
        return path

    # -- metadata -----------------------------------------------------------------------------
    def _file_info(self, info: Mapping[str, Any]) -> pafs.FileInfo:
        if info["type"] == "directory":
            return pafs.FileInfo(info["name"], pafs.FileType.Directory)
        return pafs.FileInfo(info["name"], pafs.FileType.File, size=info["size"],
                             mtime=info.get("mtime"))  # fmt: skip

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        out = []
        for path in paths:
            try:
                out.append(self._file_info(self.fs.info(path)))
            except FileNotFoundError:
                out.append(pafs.FileInfo(path, pafs.FileType.NotFound))
        return out

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.rstrip("/")
        try:
            kind = self.fs.info(base)["type"]
        except FileNotFoundError:
            if selector.allow_not_found:
                return []
            raise
        if kind != "directory":
            raise NotADirectoryError(base)
        found = self.fs.find(base, maxdepth=None if selector.recursive else 1, withdirs=True,
                             detail=True)  # fmt: skip
        return [self._file_info(info) for name, info in found.items() if name != base]

    # -- changes ------------------------------------------------------------------------------
    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.mkdir(path)

    def delete_dir(self, path: str) -> None:
        self.fs.rm(path, recursive=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        if not self.fs.exists(path):
            if missing_dir_ok:
                return
            raise FileNotFoundError(path)
        for child in self.fs.ls(path, detail=False):
            self.fs.rm(child, recursive=True)

    def delete_root_dir_contents(self) -> None:
        self.delete_dir_contents(self.fs.job.name, missing_dir_ok=True)

    def delete_file(self, path: str) -> None:
        if not self.fs.isfile(path):
            raise FileNotFoundError(path)
        self.fs.rm_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.mv(src, dest, recursive=True)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.cp_file(src, dest)

    # -- files --------------------------------------------------------------------------------
    def _buffer(self, path: str) -> pa.Buffer:
        key = self.fs._key(path)
        job = self.fs.job
        try:
            if job.client.arena(job.router.write_node(validate_key(key))) is None:
                fetched = self._fetched(key)
                if fetched is not None:
                    return fetched
            # The node's own memory when co-located: an Arrow buffer at its address that keeps
            # the lease (and so the value's space) alive while any Arrow buffer over it lives.
            return arrow_buffer(job, key, verify=self.verify)[0]
        except NotFoundError:
            raise FileNotFoundError(path) from None

    def _fetched(self, key: str) -> pa.Buffer | None:
        """The value read over the network into a buffer of Arrow's memory pool, or None if
        it kept changing size. A fresh ``bytes`` of tens of MiB per file costs the kernel a
        page fault per 4 KiB (a ``get`` of 64 MiB took twice as long); the pool reuses its
        pages. NotFoundError if the key is absent."""
        for _ in range(2):
            length = self.fs.job.stat(key).length
            buffer = pa.allocate_buffer(length)
            try:
                n = self.fs.job.get_into(key, buffer)
            except RequestError:  # replaced by a larger value since the stat
                continue
            return buffer if n == length else buffer.slice(0, n)
        return None

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._buffer(path))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._buffer(path))

    def open_output_stream(self, path: str, metadata: Any = None) -> pa.NativeFile:
        return pa.PythonFile(self.fs.open(path, "wb"), mode="w")

    def open_append_stream(self, path: str, metadata: Any = None) -> pa.NativeFile:
        raise NotImplementedError("pocket:// values are written once: append is not supported")
