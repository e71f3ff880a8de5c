"""``pocket://``: an fsspec filesystem over a pocketlib job.

URLs are ``pocket://<job>/<key>``: the first component names the job (its name or its id),
the rest is the key. Keys are flat; ``/`` makes pseudo-directories, and ``mkdir`` leaves a
marker (the directory's name with a trailing ``/``) so that an empty directory exists.

The filesystem finds its job from its constructor arguments or the environment: ``ticket`` (a
job's ticket, its JSON or dict; else ``POCKET_TICKET``), or ``nodes`` and ``job`` (direct
mode). Its arguments pickle (dask ships filesystems to its workers), and instances with the same
arguments share one job and its connections, whatever the thread.

>>> import fsspec                                                    # doctest: +SKIP
>>> fs = fsspec.filesystem("pocket", ticket=job.ticket.to_json())    # doctest: +SKIP
>>> fs.pipe("pocket://sort/in/part-0", b"...")                       # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import io
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from .client.job import Job
    from .client.streams import ObjectWriter

__all__ = ["PocketFile", "PocketFileSystem"]

_direct: dict[tuple[tuple[str, ...], str], Job] = {}
_direct_lock = threading.Lock()


def _shared_job(ticket: str | None, nodes: tuple[str, ...] | None, job: str | None) -> Job:
    """One job (and one set of connections) per ticket or per (nodes, job), per process."""
    from .client.client import attached, connect

    if ticket is not None:
        return attached(ticket)
    assert nodes is not None
    assert job is not None
    with _direct_lock:
        found = _direct.get((nodes, job))
        if found is None:
            found = _direct[(nodes, job)] = connect(list(nodes), job)
        return found


class _FromEnvironment(type(AbstractFileSystem)):  # type: ignore[misc]
    """Takes ``POCKET_TICKET`` as the ``ticket`` argument when no job is named, before fsspec
    looks for a cached instance: instances and pickles then carry the job they serve (a worker
    process may not have the variable, and it may name another job by the next call)."""

    def __call__(cls, ticket: Any = None, **kwargs: Any) -> Any:
        if ticket is None and kwargs.get("nodes") is None:
            ticket = os.environ.get("POCKET_TICKET")
        return super().__call__(ticket=ticket, **kwargs)


class PocketFileSystem(AbstractFileSystem, metaclass=_FromEnvironment):  # type: ignore[misc]
    """fsspec's interface over one pocketlib job (protocol ``pocket``)."""

    protocol = "pocket"
    root_marker = ""

    def __init__(
        self,
        ticket: str | Mapping[str, Any] | None = None,
        *,
        nodes: Sequence[str] | None = None,
        job: str | None = None,
        **storage_options: Any,
    ) -> None:
        if ticket is not None and not isinstance(ticket, str):
            from .ticket import Ticket

            ticket = Ticket.parse(ticket).to_json()  # (constructor arguments pickle as text)
        super().__init__(ticket=ticket, nodes=nodes, job=job, **storage_options)
        if ticket is None and (nodes is None or job is None):
            raise ConfigError("pocket:// needs a job's ticket (ticket=..., or POCKET_TICKET) or "
                              "nodes=[...] and job=... (direct mode)")  # fmt: skip
        self.job = _shared_job(ticket, tuple(nodes) if nodes else None, job)
        #: The names a URL's first component may give: the job's name and its id.
        self.job_names = {self.job.name, self.job.ticket.job}

    # -- paths --------------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        """The key of ``path`` ("" for the job's root); FileNotFoundError for another job."""
        path = self._strip_protocol(path)
        head, _, key = path.partition("/")
        if not head:
            raise FileNotFoundError(f"pocket://{path}: a URL names a job: pocket://<job>/<key>")
        if head not in self.job_names:
            raise FileNotFoundError(
                f"pocket://{path}: this filesystem serves job {self.job.name!r}, not {head!r}"
            )
        return key.strip("/")

    def _path(self, key: str) -> str:
        return f"{self.job.name}/{key}" if key else self.job.name

    # -- listing ------------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        key = self._key(path)
        if not key:
            return {"name": self._path(""), "size": 0, "type": "directory"}
        try:
            meta = self.job.stat(key)
        except NotFoundError:
            pass
        else:
            return self._file(key, meta.length, meta.created, meta.checksum, meta.version)
        if next(iter(self.job.list(key + "/", page_size=1)), None) is not None:
            return {"name": self._path(key), "size": 0, "type": "directory"}
        raise FileNotFoundError(f"pocket://{self._path(key)}")

    def _file(self, key: str, size: int, created: float, checksum: int = 0, version: int = 0
              ) -> dict[str, Any]:  # fmt: skip
        return {"name": self._path(key), "size": size, "type": "file", "created": created,
                "mtime": created, "checksum": checksum, "version": version}  # fmt: skip

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        key = self._key(path)
        prefix = f"{key}/" if key else ""
        files: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name, info in self._listing(prefix, detail):
            rest = name[len(prefix) :]
            if not rest:
                continue  # the directory's own marker
            child, sep, _ = rest.partition("/")
            if sep:
                dirs.add(prefix + child)
            else:
                files.append(info)
        if not files and not dirs:
            info = self.info(path)  # a file, an empty directory, or FileNotFoundError
            if info["type"] == "file":
                return [info] if detail else [info["name"]]
            if key and not self._marked(key):
                raise FileNotFoundError(f"pocket://{self._path(key)}")
        out = [{"name": self._path(d), "size": 0, "type": "directory"} for d in sorted(dirs)]
        out += files
        return out if detail else [o["name"] for o in out]

    def _listing(self, prefix: str, detail: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each key under ``prefix`` with its info (with ``detail``: size, times, checksum,
        from the listing itself, not a request per key; else its name only)."""
        if not detail:
            return ((k, {"name": self._path(k)}) for k in self.job.list(prefix))
        return ((m.key, self._file(m.key, m.length, m.created, m.checksum, m.version))
                for m in self.job.list_info(prefix))  # fmt: skip

    def _info_of(self, key: str) -> dict[str, Any]:
        meta = self.job.stat(key)
        return self._file(key, meta.length, meta.created, meta.checksum, meta.version)

    def _marked(self, key: str) -> bool:
        return bool(self.job.exists(key + "/"))

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False,
             detail: bool = False, **kwargs: Any) -> Any:  # fmt: skip
        key = self._key(path)
        try:
            if key and self.info(path)["type"] == "file":
                found = {self._path(key): self._info_of(key)}
                return found if detail else list(found)
        except FileNotFoundError:
            return {} if detail else []
        prefix = f"{key}/" if key else ""
        out: dict[str, dict[str, Any]] = {}
        for name, info in self._listing(prefix, detail):
            rest = name[len(prefix) :]
            if not rest:
                continue  # the directory's own marker
            marker = rest.endswith("/")
            parts = rest.rstrip("/").split("/")
            if withdirs:  # the directories above it (and the one a marker stands for)
                for i in range(1, len(parts) + 1 if marker else len(parts)):
                    if maxdepth is not None and i > maxdepth:
                        break
                    d = self._path(prefix + "/".join(parts[:i]))
                    out.setdefault(d, {"name": d, "size": 0, "type": "directory"})
            if not marker and (maxdepth is None or len(parts) <= maxdepth):
                out[self._path(name)] = info
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    # -- whole values -------------------------------------------------------------------------
    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:  # fmt: skip
        key = self._key(path)
        if not key:
            raise IsADirectoryError(f"pocket://{self._path(key)} is the job's root directory")
        try:
            if start is None and end is None:
                return self.job.get(key)
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = self.job.stat(key).size
                start = max(0, size + start) if start is not None and start < 0 else start
                end = max(0, size + end) if end is not None and end < 0 else end
            return self.job.get_range(key, start or 0, end if end is not None else 1 << 62)
        except NotFoundError:
            if self.isdir(path):
                raise IsADirectoryError(f"pocket://{self._path(key)} is a directory") from None
            raise FileNotFoundError(f"pocket://{self._path(key)}") from None

    def cat_ranges(self, paths: list[str], starts: Any, ends: Any, max_gap: Any = None,
                   on_error: str = "return", **kwargs: Any) -> list[Any]:  # fmt: skip
        if not isinstance(starts, list):
            starts = [starts] * len(paths)
        if not isinstance(ends, list):
            ends = [ends] * len(paths)
        plain = [i for i, (s, e) in enumerate(zip(starts, ends, strict=True))
                 if s is not None and e is not None and 0 <= s <= e]  # fmt: skip
        out: list[Any] = [None] * len(paths)
        try:  # ranges with both ends: pipelined, one round trip's latency for all of them
            keys = {p: self._key(p) for p in {paths[i] for i in plain}}  # (each path once)
            got = self.job.get_ranges([(keys[paths[i]], starts[i], ends[i]) for i in plain])
            for i, data in zip(plain, got, strict=True):
                out[i] = data
        except (NotFoundError, FileNotFoundError):
            pass  # (one is missing: each is read alone below, and says which)
        for i, (path, start, end) in enumerate(zip(paths, starts, ends, strict=True)):
            if out[i] is not None:
                continue
            try:
                out[i] = self.cat_file(path, start, end)
            except Exception as exc:
                if on_error == "raise":
                    raise
                out[i] = exc
        return out

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        key = self._key(path)
        if mode == "create" and self.job.exists(key):
            raise FileExistsError(f"pocket://{self._path(key)}")
        self.job.put(key, value)
        self.invalidate_cache(path)

    def pipe(self, path: Any, value: Any = None, **kwargs: Any) -> None:
        items = {path: value} if isinstance(path, str) else dict(path)
        if kwargs.get("mode", "overwrite") == "create" or len(items) == 1:
            for p, v in items.items():
                self.pipe_file(p, v, **kwargs)
            return
        self.job.put_many({self._key(p): v for p, v in items.items()})

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._key(path1), self._key(path2)
        try:
            self.job.copy(src, dst)  # on the node when it holds both keys
        except NotFoundError:
            if self.isdir(path1):
                self.makedirs(path2, exist_ok=True)
                return
            raise FileNotFoundError(f"pocket://{self._path(src)}") from None

    def _rm(self, path: str) -> None:
        key = self._key(path)
        if not self.job.delete(key):
            self.job.delete(key + "/")  # an empty directory's marker

    def rm_file(self, path: str) -> None:
        self._rm(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        if not recursive or maxdepth is not None or any(_magic(p) for p in paths):
            super().rm(paths, recursive=recursive, maxdepth=maxdepth)
            return
        for p in paths:  # a whole subtree: one request per node, not one per key
            key = self._key(p)
            removed = self.job.delete_prefix(f"{key}/" if key else "")
            if key:
                removed += self.job.delete(key)
            if not removed:
                raise FileNotFoundError(p)

    # -- directories --------------------------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        key = self._key(path)
        if key and not self.job.exists(key):
            self.job.put(key + "/", b"")

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        if not exist_ok and self.exists(path):
            raise FileExistsError(path)
        self.mkdir(path)

    def rmdir(self, path: str) -> None:
        key = self._key(path)
        if any(True for k in self.job.list(key + "/") if k != key + "/"):
            raise OSError(f"pocket://{self._path(key)} is not empty")
        self.job.delete(key + "/")

    # -- metadata -----------------------------------------------------------------------------
    def created(self, path: str) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.info(path)["created"], tz=dt.UTC)

    def modified(self, path: str) -> dt.datetime:
        return self.created(path)  # values are written once: created is when they were

    def ukey(self, path: str) -> str:
        info = self.info(path)
        return f"{info.get('checksum', 0):016x}-{info.get('version', 0)}"

    def sizes(self, paths: Iterable[str]) -> list[int]:
        return [self.info(p)["size"] for p in paths]

    # -- files --------------------------------------------------------------------------------
    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> PocketFile:  # fmt: skip
        if "a" in mode:
            raise NotImplementedError(
                "pocket:// values are written once: write a new key instead of appending"
            )
        if "x" in mode and self.exists(path):
            raise FileExistsError(f"pocket://{self._strip_protocol(path)}")
        kwargs.setdefault("cache_type", "none")  # byte ranges as asked: no read-ahead
        return PocketFile(self, path, mode.replace("x", "w"), block_size=block_size,
                          autocommit=autocommit, cache_options=cache_options, **kwargs)  # fmt: skip


class PocketFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of a ``pocket://`` filesystem. Reads see the one value there when it opened,
    never a mix of two: a small value is read whole on opening, a large one by byte ranges
    pinned to its version (ConflictError if it is overwritten or deleted meanwhile), with no
    read-ahead. Writes stream to the atomic writer and publish on close (nothing if it is
    closed after an exception)."""

    fs: PocketFileSystem

    def __init__(self, fs: PocketFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        self._key = fs._key(path)
        self._writer: ObjectWriter | None = None
        self._version = 0
        self._whole: bytes | None = None
        kwargs = {k: v for k, v in kwargs.items() if k in _FILE_KWARGS}
        if mode == "rb":
            kwargs["size"] = self._pin(fs, path)  # (a size the caller knew may be older)
        super().__init__(fs, path, mode, **kwargs)

    def _pin(self, fs: PocketFileSystem, path: str) -> int:
        """Fix the version this file reads (a small, compressed or striped value: all of it, in
        one GET); its size."""
        if not self._key:
            raise IsADirectoryError(f"pocket://{fs._path('')} is the job's root directory")
        try:
            info = fs.job.stat(self._key)
            if info.size > _WHOLE_MAX and not (info.compressed or info.striped):
                self._version = info.version  # its ranges are read from this value only
                return info.size
            self._whole = fs.job.get(self._key)
            return len(self._whole)
        except NotFoundError:
            if fs.isdir(path):
                raise IsADirectoryError(f"pocket://{fs._path(self._key)} is a directory") from None
            raise FileNotFoundError(f"pocket://{fs._path(self._key)}") from None

    def _fetch_range(self, start: int, end: int) -> bytes:
        if self._whole is not None:
            return self._whole[start:end]
        return self.fs.job.get_range(self._key, start, end, version=self._version)

    def _initiate_upload(self) -> None:
        self._writer = self.fs.job.writer(self._key)

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._writer is None:
            self._initiate_upload()
        assert self._writer is not None
        self._writer.write(self.buffer.getvalue())
        if final:
            self._writer.close()  # published: atomic
        return True

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.buffer = io.BytesIO()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None and self.mode != "rb":
            self.discard()  # an exception inside ``with``: nothing is published
            self.closed = True
            return
        self.close()


def _magic(path: str) -> bool:
    return any(c in path for c in "*?[")


_FILE_KWARGS = {"block_size", "autocommit", "cache_type", "cache_options", "size"}
#: Files of values up to this size read all of it when they open: one GET, which no overwrite
#: can tear, instead of a request per range read.
_WHOLE_MAX = 4 * 1024 * 1024
