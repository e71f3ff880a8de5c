"""Striping: a value above the job's stripe size is stored as chunks that route independently.

A striped put writes chunk ``i`` under ``key + NUL + put_id + "/" + i`` (each key routed by the
newest weight map, so the chunks spread over the job's nodes and draw on all their bandwidth),
in parallel, then a small manifest under ``key`` itself, flagged :attr:`Flag.STRIPED`. The
value is visible once the manifest lands; chunk keys are unique to their put, so a reader
never mixes two puts' chunks. Reads fetch the chunks in parallel into one buffer and check
each chunk's checksum and the whole value's.

These functions are :class:`~pocketlib.client.job.Job`'s; the job calls them when a value is large
or a response carries the STRIPED flag, so the path of small values is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import secrets
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..config import MAX_KEY_BYTES
from ..connection import Connection
from ..errors import (
    ChecksumError,
    ConflictError,
    NotFoundError,
    PocketError,
    ProtocolError,
    RequestError,
    VersionError,
)
from ..protocol import Buffer, Flag, Hasher, Op, checksum, decompress
from .arena import SharedBuffer
from .base import JobBase, ObjectInfo

if TYPE_CHECKING:
    from .calls import ClientCalls

__all__ = [
    "MANIFEST_MAX",
    "Manifest",
    "delete_at",
    "drop_chunks",
    "get",
    "get_buffer",
    "get_into",
    "get_range",
    "is_chunk_key",
    "manifest_at",
    "put",
    "shutdown",
    "stat",
]

T = TypeVar("T")

#: Manifests are far smaller than this (about 120 bytes of JSON); a peek reads this much.
MANIFEST_MAX = 1024
FORMAT = 1
#: Chunk transfers in flight per client: enough to keep a few nodes busy at once.
WORKERS = 8

_CHUNK_TAIL = re.compile(rb"\x00[0-9a-f]{8}/(?:0|[1-9][0-9]*)\Z")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the key of a striped value stores: how to find and check its chunks."""

    put_id: str
    count: int
    chunk_size: int
    #: Bytes stored over all chunks (the compressed size if ``lz4``).
    size: int
    #: XXH3-64 of the whole stored value, as an unstriped put would have stored it.
    checksum: int
    lz4: bool

    def encode(self) -> bytes:
        """The manifest's body (compact JSON: rare, small, and readable in a dump)."""
        body = {"v": FORMAT, "id": self.put_id, "n": self.count, "chunk": self.chunk_size,
                "size": self.size, "checksum": self.checksum, "lz4": self.lz4}  # fmt: skip
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: Buffer, raw: bytes) -> Manifest:
        """Parse and check a manifest read from ``raw``; ProtocolError if it is not one."""
        try:
            d = json.loads(bytes(body))
            if d["v"] != FORMAT:
                raise VersionError(f"striped value {raw!r} has manifest format {d['v']}")
            m = cls(str(d["id"]), int(d["n"]), int(d["chunk"]), int(d["size"]),
                    int(d["checksum"]), bool(d["lz4"]))  # fmt: skip
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"malformed manifest of striped value {raw!r}: {exc}") from exc
        if m.chunk_size < 1 or m.count != -(-m.size // m.chunk_size) or m.count < 1:
            raise ProtocolError(f"inconsistent manifest of striped value {raw!r}")
        return m

    def chunk_key(self, raw: bytes, i: int) -> bytes:
        """The key chunk ``i`` is stored under."""
        return b"%s\0%s/%d" % (raw, self.put_id.encode(), i)

    def span(self, i: int) -> tuple[int, int]:
        """Chunk ``i``'s ``[start, end)`` within the value."""
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.size)


def is_chunk_key(raw: bytes) -> bool:
    """Whether ``raw`` is a chunk's key (``list`` leaves those out)."""
    return _CHUNK_TAIL.search(raw) is not None


# -- the thread pool ----------------------------------------------------------------------------
# One per Client (its connection pools are shared by the threads), made on first use and made
# again in a forked child, whose copy of the parent's pool has no threads.
_executors: weakref.WeakKeyDictionary[ClientCalls, tuple[int, ThreadPoolExecutor]] = (
    weakref.WeakKeyDictionary()
)


def _executor(client: ClientCalls) -> ThreadPoolExecutor:
    pid = os.getpid()
    entry = _executors.get(client)
    if entry is None or entry[0] != pid:
        # No lock: a lock held by another thread at fork() would stay held in the child. Two
        # threads racing here make two pools; the loser's is dropped with its idle threads.
        entry = _executors[client] = (pid, ThreadPoolExecutor(WORKERS, "pocket-stripe"))
    return entry[1]


def shutdown(client: ClientCalls) -> None:
    """Stop ``client``'s chunk threads (they are made again if it is used afterwards)."""
    entry = _executors.pop(client, None)
    if entry is not None and entry[0] == os.getpid():
        entry[1].shutdown(wait=True)


def _run(
    client: ClientCalls,
    tasks: Sequence[Callable[[], T]],
    *,
    meanwhile: Callable[[], None] | None = None,
    each: Callable[[int], None] | None = None,
) -> list[T]:
    """Run ``tasks`` in parallel; their results.

    ``meanwhile()`` runs in this thread once they are submitted, and ``each(i)`` once task
    ``i`` and every one before it have succeeded: checksums computed while later transfers
    (which release the GIL) are under way. The first failure by index is raised after every
    task has finished, so none is still writing into a caller's buffer.
    """
    if len(tasks) == 1:
        if meanwhile is not None:
            meanwhile()
        result = tasks[0]()
        if each is not None:
            each(0)
        return [result]
    futures: list[Future[T]] = [_executor(client).submit(t) for t in tasks]
    failed: Future[T] | None = None
    try:
        if meanwhile is not None:
            meanwhile()
        for i, f in enumerate(futures):
            if f.exception() is not None:  # (waits for it)
                failed = failed or f
            elif each is not None and failed is None:
                each(i)
    except BaseException:  # interrupted: let the running ones finish, drop the others
        for f in futures:
            f.cancel()
        wait(futures)
        raise
    if failed is not None:
        failed.result()  # raises its exception
    return [f.result() for f in futures]


class _Missing(Exception):
    """Chunk ``index`` was not found (the caller decides what that means)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


# -- writes -------------------------------------------------------------------------------------
def put(job: JobBase, raw: bytes, view: Buffer, flags: int, ttl_ms: int) -> None:
    """Store ``view`` (already compressed if ``flags`` has LZ4) striped under ``raw``."""
    data = memoryview(view).cast("B")
    size = len(data)
    chunk = job.ticket.stripe_size
    m = Manifest(secrets.token_hex(4), -(-size // chunk), chunk, size, 0, bool(flags & Flag.LZ4))
    if len(m.chunk_key(raw, m.count - 1)) > MAX_KEY_BYTES:  # no room for chunk keys: whole
        job._put_at(job._node_for(raw), raw, view, flags, ttl_ms)
        return
    persist = flags & Flag.PERSIST
    started = time.monotonic()
    whole: list[int] = []

    def put_chunk(i: int) -> None:
        key = m.chunk_key(raw, i)
        start, end = m.span(i)
        job._put_at(job._node_for(key), key, data[start:end], persist, ttl_ms)

    _warm(job)
    try:
        tasks = [_bind(put_chunk, i) for i in range(m.count)]
        _run(job.client, tasks, meanwhile=lambda: whole.append(checksum(data)))
        m = dataclasses.replace(m, checksum=whole[0])
        old: Manifest | None = None
        with contextlib.suppress(PocketError):  # best effort: unknown, its chunks stay behind
            old = _peek(job, raw)
        if ttl_ms:  # the manifest must not outlive its first chunk
            ttl_ms = max(1, ttl_ms - int((time.monotonic() - started) * 1000))
        job._put_at(job._node_for(raw), raw, m.encode(), Flag.STRIPED | persist, ttl_ms)
    except BaseException:
        _delete_chunks(job, raw, m, strict=False)
        raise
    if old is not None and old.put_id != m.put_id:
        _delete_chunks(job, raw, old, strict=False)  # the put is done; leftovers only cost space


def _bind(fn: Callable[[int], T], i: int) -> Callable[[], T]:
    return lambda: fn(i)


def _warm(job: JobBase) -> None:
    # Probe each node's shared-memory arena once, here, rather than racing in the threads.
    for node in job._live_nodes:
        job.client.arena(node)


def _candidates(job: JobBase, key: bytes) -> list[str]:
    if job._single:
        return [job._node_for(key)]
    return [n for n in job.router.read_nodes(key) if n in job._live_nodes]


def _delete_chunks(job: JobBase, raw: bytes, m: Manifest, *, strict: bool) -> None:
    """DELETE each chunk wherever a weight-map version may have put it."""

    def delete(i: int) -> None:
        key = m.chunk_key(raw, i)
        for node in _candidates(job, key):
            try:
                job._call(node, Op.DELETE, key)
            except PocketError:
                if strict:
                    raise

    _run(job.client, [_bind(delete, i) for i in range(m.count)])


def drop_chunks(job: JobBase, raw: bytes, manifest: Buffer) -> None:
    """Delete the chunks of a striped value that a put just replaced (best effort: a chunk
    that cannot be deleted stays unlisted until purge, deregistration or its ttl)."""
    try:
        m = Manifest.decode(manifest, raw)
    except PocketError:
        return
    _delete_chunks(job, raw, m, strict=False)


def delete_at(job: JobBase, node: str, raw: bytes) -> bool:
    """Delete ``raw`` on ``node`` and, if it was a manifest, its chunks; whether it existed.

    The delete is a ranged GET of the value's head with DELETE_AFTER_READ: one request, like
    a DELETE, that also brings the manifest of a striped value (a DELETE would leave no trace
    of its chunks). The node counts it as a GET.
    """
    try:
        h, body = job._call(
            node, Op.GET, raw, flags=Flag.RANGE | Flag.DELETE_AFTER_READ, offset=0,
            length=MANIFEST_MAX, read=Connection.read_value,
        )  # fmt: skip
    except NotFoundError:
        return False
    except PocketError as exc:  # a value too damaged to read, or a connection that broke
        existed = job._call(node, Op.DELETE, raw)[0].size
        return bool(existed) or isinstance(exc, ChecksumError)
    if h.flags & Flag.PERSIST:  # the take freed the fast copy; the persisted one goes too
        job._call(node, Op.DELETE, raw)
    if h.flags & Flag.STRIPED:
        _delete_chunks(job, raw, Manifest.decode(body, raw), strict=True)
    return True


# -- reads --------------------------------------------------------------------------------------
def _peek(job: JobBase, raw: bytes) -> Manifest | None:
    """The manifest now under ``raw`` (None if the value is not striped); NotFoundError if
    there is no value."""
    h, body = job._read(raw.decode(), lambda n, r: job._call(
        n, Op.GET, r, flags=Flag.RANGE, offset=0, length=MANIFEST_MAX, read=Connection.read_value
    ))  # fmt: skip
    return Manifest.decode(body, raw) if h.flags & Flag.STRIPED else None


def manifest_at(job: JobBase, node: str, raw: bytes, version: int) -> Manifest:
    """The manifest stored as ``version`` of ``raw`` on ``node``; ConflictError if the key now
    holds another version."""
    h, body = job._call(
        node, Op.GET, raw, flags=Flag.RANGE, offset=0, length=MANIFEST_MAX, arg=version,
        read=Connection.read_value,
    )  # fmt: skip
    if not h.flags & Flag.STRIPED:
        raise ConflictError(f"object {raw.decode()!r} changed during the read")
    return Manifest.decode(body, raw)


def stat(
    job: JobBase,
    node: str,
    raw: bytes,
    key: str,
    version: int,
    created: float,
    expires: float | None,
) -> ObjectInfo:
    """What :meth:`Job.stat` reports of the striped ``version`` of ``raw`` on ``node``."""
    try:
        m = manifest_at(job, node, raw, version)
    except ConflictError:  # overwritten since the STAT: look again
        return job._stat_at(node, raw, key)
    length = _lz4_length(job, raw, m) if m.lz4 else m.size
    return ObjectInfo(key, m.size, m.checksum, version, m.lz4, created, expires, True, length)


def _lz4_length(job: JobBase, raw: bytes, m: Manifest) -> int:
    """A compressed striped value's own length: the lz4 block stores it in its first 4 bytes,
    the start of chunk 0."""
    _, head = job._read(m.chunk_key(raw, 0).decode(), lambda n, r: job._call(
        n, Op.GET, r, flags=Flag.RANGE, offset=0, length=4, read=Connection.read_value,
    ))  # fmt: skip
    return int.from_bytes(head, "little")


def _explain(job: JobBase, raw: bytes, m: Manifest, index: int, taken: bool) -> PocketError:
    """The error for chunk ``index`` not found: the value changed, or lost a chunk."""
    key = raw.decode()
    if not taken:  # the manifest is still ours to look at: did the value change meanwhile?
        try:
            now = _peek(job, raw)
        except NotFoundError:
            return NotFoundError(f"{key!r} was deleted while it was being read")
        if now is None or now.put_id != m.put_id:
            return ConflictError(f"object {key!r} changed during the read")
    return NotFoundError(
        f"chunk {index} of striped value {key!r} ({m.chunk_key(raw, index)!r}) is missing"
    )


def _fill(job: JobBase, raw: bytes, m: Manifest, target: memoryview, take: bool) -> None:
    """Read every chunk into ``target`` (``m.size`` bytes) and check the whole value."""

    def fetch(i: int) -> None:
        key = m.chunk_key(raw, i)
        start, end = m.span(i)
        part = target[start:end]
        name = key.decode()
        try:
            n = job._read(name, lambda node, r: job._get_into_at(node, r, name, part, take))
        except NotFoundError as exc:  # (NodeLostError, its node is gone, says so itself)
            raise _Missing(i) from exc
        except RequestError as exc:  # larger than its place in the value
            raise ChecksumError(f"chunk {i} of {raw.decode()!r} has the wrong size") from exc
        if n != end - start:
            raise ChecksumError(f"chunk {i} of {raw.decode()!r} has the wrong size")

    hasher = Hasher()
    _warm(job)
    try:
        _run(job.client, [_bind(fetch, i) for i in range(m.count)],
             each=lambda i: hasher.update(target[slice(*m.span(i))]))  # fmt: skip
    except BaseException as exc:
        if take:  # the manifest is gone: chunks that were not taken must go too
            _delete_chunks(job, raw, m, strict=False)
        if isinstance(exc, _Missing):
            raise _explain(job, raw, m, exc.index, take) from exc.__cause__
        raise
    if hasher.intdigest() != m.checksum:
        raise ChecksumError(f"checksum mismatch reading striped value {raw.decode()!r}")


def _assemble(job: JobBase, raw: bytes, m: Manifest, take: bool) -> bytes:
    """The whole stored value, as one bytes object the chunks were read straight into.

    A BytesIO's buffer is a bytes object that ``getbuffer()`` exposes writable and that
    ``getvalue()`` hands over without a copy once no view is left (CPython; elsewhere it
    copies). A bytearray would need a second allocation and copy to become bytes, which
    on a 64 MiB value costs about as much as the transfer.
    """
    io_ = io.BytesIO()
    io_.seek(m.size - 1)
    io_.write(b"\0")
    with io_.getbuffer() as view:
        _fill(job, raw, m, view, take)
    return io_.getvalue()


def get(job: JobBase, raw: bytes, body: Buffer, take: bool) -> bytes:
    """The value whose manifest is ``body`` (``take``: the manifest was read with
    DELETE_AFTER_READ, and the chunks are taken too)."""
    m = Manifest.decode(body, raw)
    out = _assemble(job, raw, m, take)
    return decompress(out) if m.lz4 else out


def get_into(job: JobBase, raw: bytes, body: Buffer, target: memoryview, take: bool) -> int:
    """Read the value whose manifest is ``body`` into ``target``; its length."""
    m = Manifest.decode(body, raw)
    if m.lz4:
        value = decompress(_assemble(job, raw, m, take))
        if len(value) > len(target):
            raise _too_small(raw, len(value), len(target))
        target[: len(value)] = value
        return len(value)
    if m.size > len(target):
        if take:
            _delete_chunks(job, raw, m, strict=False)
        raise _too_small(raw, m.size, len(target))
    _fill(job, raw, m, target[: m.size], take)
    return m.size


def _too_small(raw: bytes, need: int, have: int) -> PocketError:
    return RequestError(f"{raw.decode()!r} is {need} bytes; the buffer holds {have}")


def get_buffer(job: JobBase, raw: bytes, body: Buffer, take: bool) -> SharedBuffer:
    """A read-only buffer over a copy of the value whose manifest is ``body``."""
    m = Manifest.decode(body, raw)
    if m.lz4:
        return SharedBuffer(memoryview(decompress(_assemble(job, raw, m, take))))
    return SharedBuffer(memoryview(_assemble(job, raw, m, take)))


def get_range(job: JobBase, node: str, raw: bytes, version: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the striped ``version`` of ``raw`` on ``node``: ranged GETs
    of the chunks that cover them, in parallel."""
    m = manifest_at(job, node, raw, version)
    if m.lz4:  # ranges of compressed values: decompress the whole value
        return decompress(_assemble(job, raw, m, False))[start:end]
    end = min(end, m.size)
    if start >= end:
        return b""

    def fetch(i: int) -> bytes:
        key = m.chunk_key(raw, i)
        lo, hi = m.span(i)
        offset, length = max(start, lo) - lo, min(end, hi) - max(start, lo)
        try:
            data = job._read(key.decode(), lambda n, r: job._call(
                n, Op.GET, r, flags=Flag.RANGE, offset=offset, length=length,
                read=Connection.read_value,
            ))[1]  # fmt: skip
        except NotFoundError as exc:
            raise _Missing(i) from exc
        if len(data) != length:
            raise ChecksumError(f"chunk {i} of {raw.decode()!r} is short")
        return bytes(data)

    first, last = start // m.chunk_size, (end - 1) // m.chunk_size
    try:
        parts = _run(job.client, [_bind(fetch, i) for i in range(first, last + 1)])
    except _Missing as missing:
        raise _explain(job, raw, m, missing.index, False) from missing.__cause__
    return parts[0] if len(parts) == 1 else b"".join(parts)
