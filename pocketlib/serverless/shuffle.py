"""A shuffle through a job: mappers write one object per reducer, reducers wait for theirs.

A :class:`ShuffleWriter` collects a mapper's output per reducer and publishes it when closed:
one object per (mapper, reducer), every reducer's included (empty if the mapper had nothing for
it), each stored atomically, so a reducer that finds all M objects of its partition has every
mapper's whole output; a mapper that dies before closing publishes nothing of what it had not
closed, and one delivered twice rewrites the same objects. A :class:`ShuffleReader` waits on
the nodes until its partition's M objects exist (no polling), reads them in mapper order, and
frees them as it reads.

Records are partitioned by :func:`partition_of`, a stable hash (XXH3-64 of the key's bytes, of
its UTF-8 for a str, else of its pickle) modulo the number of reducers, the same in every
process and on every host.
"""

from __future__ import annotations

import bisect
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, NotFoundError, PocketError, PocketTimeoutError
from ..protocol import Buffer, checksum

if TYPE_CHECKING:
    from ..client.job import Job

#: Seconds a reader waits on the nodes before it looks for the shuffle's abort marker.
_ABORT_CHECK = 1.0


class ShuffleAbortedError(PocketError):
    """A shuffle was aborted (a mapper failed) while a reader waited for its parts."""


def abort_key(shuffle: str) -> str:
    """The key of a shuffle's abort marker (its value: why)."""
    return f"{shuffle}/aborted"


def abort(job: Job, shuffle: str, reason: str) -> None:
    """Abort a shuffle: its readers stop waiting with ShuffleAbortedError."""
    job.put(abort_key(shuffle), reason.encode())


__all__ = [
    "RangePartitioner",
    "ShuffleAbortedError",
    "ShuffleReader",
    "ShuffleWriter",
    "abort",
    "part_key",
    "partition_of",
    "publish",
    "wait_for_parts",
]


def part_key(shuffle: str, reducer: int, mapper: int) -> str:
    """The key of mapper ``mapper``'s output for reducer ``reducer``."""
    return f"{shuffle}/r{reducer}/m{mapper}"


def publish(
    job: Job,
    shuffle: str,
    mapper: int,
    parts: Sequence[Buffer] | Mapping[int, Buffer],
    *,
    ttl: float | None = None,
) -> None:
    """Publish mapper ``mapper``'s output: ``parts[r]`` for reducer r (a mapper publishes
    every reducer's, an empty one included), each object stored atomically, in one batched
    ``put_many``."""
    items = parts.items() if isinstance(parts, Mapping) else enumerate(parts)
    job.put_many({part_key(shuffle, r, mapper): p for r, p in items}, ttl=ttl)


def wait_for_parts(job: Job, shuffle: str, keys: Sequence[str], timeout: float | None) -> None:
    """Return once every key of ``keys`` (a reducer's parts) is stored; the nodes answer when
    they are, and between waits of at most a second the shuffle's abort marker is looked for
    (ShuffleAbortedError if it is there; PocketTimeoutError after ``timeout``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        try:
            job.wait_for(keys, timeout=_ABORT_CHECK if left is None
                         else max(0.0, min(_ABORT_CHECK, left)))  # fmt: skip
            return
        except PocketTimeoutError as timed_out:
            try:
                reason = job.get(abort_key(shuffle)).decode()
            except NotFoundError:
                if left is not None and left <= _ABORT_CHECK:
                    raise timed_out from None  # the caller's timeout, not the marker's miss
                continue
            raise ShuffleAbortedError(f"shuffle {shuffle!r} aborted: {reason}") from None


def partition_of(key: Any, reducers: int) -> int:
    """The reducer of a record's key: a stable hash, the same in every process."""
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    elif isinstance(key, str):
        raw = key.encode()
    else:
        raw = pickle.dumps(key, protocol=4)
    return checksum(raw) % reducers


class RangePartitioner:
    """Records by key range: reducer r gets keys between the (r-1)-th and r-th boundaries, so
    reducers' outputs concatenate in key order (TeraSort). Picklable; build it from a sample
    of the keys with :meth:`from_sample`."""

    def __init__(self, boundaries: Sequence[Any]) -> None:
        self.boundaries = list(boundaries)

    @classmethod
    def from_sample(cls, keys: Iterable[Any], reducers: int) -> RangePartitioner:
        """Boundaries at the quantiles of a sample of the keys, for ``reducers`` reducers."""
        ordered = sorted(keys)
        if reducers < 1:
            raise ConfigError(f"reducers must be at least 1, not {reducers}")
        if not ordered:
            return cls([])
        return cls([ordered[len(ordered) * r // reducers] for r in range(1, reducers)])

    def __call__(self, key: Any, reducers: int) -> int:
        return min(bisect.bisect_right(self.boundaries, key), reducers - 1)


class ShuffleWriter:
    """One mapper's output for ``reducers`` reducers, published by :meth:`close`."""

    def __init__(
        self, job: Job, shuffle: str, mapper: int, reducers: int, *, ttl: float | None = None
    ) -> None:
        if reducers < 1 or mapper < 0:
            raise ConfigError(
                f"a shuffle needs reducers >= 1 and mapper >= 0 ({reducers}, {mapper})"
            )
        self.job, self.shuffle, self.mapper, self.reducers = job, shuffle, mapper, reducers
        self.ttl = ttl
        self._parts: list[list[bytes]] = [[] for _ in range(reducers)]
        self._closed = False

    def write(self, reducer: int, data: bytes) -> None:
        """Append ``data`` to this mapper's output for ``reducer``."""
        if self._closed:
            raise ConfigError("write to a closed shuffle writer")
        self._parts[reducer].append(bytes(data))

    def write_records(
        self,
        records: Iterable[tuple[Any, Any]],
        partition: Callable[[Any, int], int] = partition_of,
    ) -> None:
        """Partition ``(key, value)`` records (by ``partition(key, reducers)``: a stable hash
        by default, or a :class:`RangePartitioner`) and pickle each part."""
        parts: list[list[tuple[Any, Any]]] = [[] for _ in range(self.reducers)]
        reducers = self.reducers
        for record in records:
            parts[partition(record[0], reducers)].append(record)
        for reducer, part in enumerate(parts):
            if part:
                self.write(reducer, pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))

    def close(self) -> None:
        """Publish: one object per reducer, stored atomically each (batched per node)."""
        if self._closed:
            return
        parts = [b"".join(p) for p in self._parts]
        publish(self.job, self.shuffle, self.mapper, parts, ttl=self.ttl)
        self._closed = True
        self._parts = []

    def __enter__(self) -> ShuffleWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:  # a mapper that failed publishes nothing
            self.close()


class ShuffleReader:
    """Reducer ``reducer``'s partition of a shuffle with ``mappers`` mappers."""

    def __init__(self, job: Job, shuffle: str, reducer: int, mappers: int) -> None:
        self.job, self.shuffle, self.reducer, self.mappers = job, shuffle, reducer, mappers
        self.keys = [part_key(shuffle, reducer, m) for m in range(mappers)]

    def read(self, *, timeout: float | None = None, free: bool = True) -> list[bytes]:
        """Every mapper's output for this reducer, in mapper order, once all are published
        (the nodes answer when they are; PocketTimeoutError after ``timeout``); ``free``
        deletes them as they are read. ShuffleAbortedError if the shuffle was aborted (a
        mapper failed: :func:`abort`) while it waited."""
        self.wait(timeout)
        # One batch per node; from a node on this host, the large parts are copied out of its
        # shared memory rather than sent through the socket.
        got = self.job.get_many(self.keys, delete_after_read=free)
        return [got[k] for k in self.keys]

    def wait(self, timeout: float | None = None) -> None:
        """Return once every mapper's part is published; the nodes answer when they are, and
        between waits of at most a second the shuffle's abort marker is looked for."""
        wait_for_parts(self.job, self.shuffle, self.keys, timeout)

    def read_records(self, *, timeout: float | None = None, free: bool = True) -> list[Any]:
        """The ``(key, value)`` records :meth:`ShuffleWriter.write_records` sent here."""
        records: list[Any] = []
        for data in self.read(timeout=timeout, free=free):
            if data:
                records += pickle.loads(data)  # (written by this job's own mappers)
        return records
