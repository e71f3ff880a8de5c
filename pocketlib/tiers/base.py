"""The TierDriver ABC: what a storage node needs from a storage medium.

A node serves exactly one driver. The write path is two-phase so values can be received
straight into the medium and become visible atomically::

    res = tier.reserve(n)             # space is taken (CapacityError if it is not there)
    sock.recv_into(res.buffers[...])  # fill it, in place
    tier.commit(res, job, key, ...)   # now, and only now, readers see it
    # or tier.abort(res) if the client went away: nothing was ever visible

Reads take a :class:`Lease`: its buffers stay valid while it is held, even if the key is
deleted or overwritten meanwhile; space is reclaimed when the last lease is released.

Drivers register under the ``pocketlib.tiers`` entry-point group; :func:`load_driver` finds
them by name.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, NamedTuple

from ..errors import ConfigError, NotFoundError, PocketError

__all__ = [
    "Capabilities",
    "Lease",
    "ObjectMeta",
    "Reservation",
    "TierDriver",
    "TierStats",
    "available_drivers",
    "load_driver",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do beyond the basics."""

    #: Values live in memory another process on this host can map (co-located fast path).
    shared_memory: bool = False
    #: Objects survive a node restart.
    persistent: bool = False
    #: Reservations and leases expose the medium's own memory (no staging copy).
    zero_copy: bool = False


#: One value of a batch put: key, value, checksum, flags.
PutItem = tuple[str, "bytes | bytearray | memoryview", int, int]


class ObjectMeta(NamedTuple):
    """What a node knows about a stored object (a tuple: built on every put)."""

    size: int
    checksum: int
    flags: int
    #: Increases with every put on the tier: a reader pins it to detect overwrites.
    version: int
    created: float
    #: Wall-clock expiry (seconds since the epoch); 0 means never.
    expires: float = 0.0


@dataclass(slots=True)
class Reservation:
    """Space taken for a value that is not yet visible."""

    size: int
    #: Writable buffers whose lengths add up to ``size``, filled in order.
    buffers: list[memoryview]
    #: Bytes charged against capacity (alignment included).
    charged: int
    #: Driver-private location of the space.
    loc: Any = None
    done: bool = False

    def fill(self, data: bytes | bytearray | memoryview) -> None:
        """Copy a value held in memory into the reserved buffers."""
        view = memoryview(data).cast("B")
        pos = 0
        for buf in self.buffers:
            buf[:] = view[pos : pos + len(buf)]
            pos += len(buf)


@dataclass(slots=True)
class Lease:
    """A read handle on a stored object; release it (or use ``with``) when done."""

    meta: ObjectMeta
    #: Read-only buffers whose lengths add up to ``meta.size``.
    buffers: list[memoryview]
    #: Called once with ``_handle`` on release (the driver's bookkeeping).
    _release: Callable[[Any], None] | None = None
    _handle: Any = None
    #: Driver-private location of the value (a mapped tier: its extents in the mapping).
    loc: Any = None

    def release(self) -> None:
        """Let the tier reclaim the object's space if it was deleted meanwhile."""
        release = self._release
        if release is not None:
            self._release = None
            release(self._handle)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def tobytes(self) -> bytes:
        """A copy of the whole value."""
        if len(self.buffers) == 1:
            return self.buffers[0].tobytes()
        return b"".join(self.buffers)


@dataclass(slots=True)
class TierStats:
    """Capacity accounting of a tier."""

    tier: str
    capacity: int
    used: int
    peak_used: int
    objects: int
    used_by_job: dict[str, int] = field(default_factory=dict)
    objects_by_job: dict[str, int] = field(default_factory=dict)
    #: Driver-specific counters (a persistent tier: objects recovered and dropped at start).
    counters: dict[str, int] = field(default_factory=dict)
    #: A chain of tiers: each tier's own stats, fastest first.
    parts: list[TierStats] = field(default_factory=list)


class TierDriver(abc.ABC):
    """A storage medium behind a node. Every method is thread-safe."""

    #: The name the driver registers under (``pocket node --tier NAME``).
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()

    @classmethod
    @abc.abstractmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        """Build the driver from node options (``--capacity``, ``--path``)."""

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Bytes this tier may hold."""

    # -- write path ---------------------------------------------------------------------------
    @abc.abstractmethod
    def reserve(self, nbytes: int) -> Reservation:
        """Take space for a value; CapacityError if the tier has no room for it."""

    @abc.abstractmethod
    def commit(
        self,
        res: Reservation,
        job: str,
        key: str,
        *,
        checksum: int,
        flags: int = 0,
        ttl: float | None = None,
    ) -> ObjectMeta:
        """Make a filled reservation visible as ``key``, replacing any previous value."""

    @abc.abstractmethod
    def abort(self, res: Reservation) -> None:
        """Give back a reservation that will never be committed."""

    @abc.abstractmethod
    def join(self, parts: list[Reservation]) -> Reservation:
        """One reservation made of filled ``parts`` in order (a streamed value's chunks)."""

    def put_many(
        self, job: str, items: Sequence[PutItem], *, ttl: float | None = None
    ) -> list[ObjectMeta | PocketError]:
        """:meth:`put` of each ``(key, value, checksum, flags)``, in order: the stored
        object's metadata, or the error that refused that item (a full tier refuses one item,
        not the batch).

        A driver may store the whole batch in one step (one lock, one pass over its index).
        """
        out: list[ObjectMeta | PocketError] = []
        for key, data, value_checksum, flags in items:
            try:
                out.append(self.put(job, key, data, checksum=value_checksum, flags=flags, ttl=ttl))
            except PocketError as exc:
                out.append(exc)
        return out

    # -- read path ----------------------------------------------------------------------------
    @abc.abstractmethod
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        """Hold the object for reading; with ``take`` it is deleted in the same step.

        Raises NotFoundError if there is no such object (or it expired).
        """

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        """A copy of the value if it is at most ``limit`` bytes, else None (lease it instead).

        Small reads are most reads; a driver may serve them in one step. With ``take`` the
        object is deleted in the same step, but only if it was small enough to be returned.
        NotFoundError if there is no such object.
        """
        with self.lease(job, key) as lease:
            if lease.meta.size > limit:
                return None
            data = lease.tobytes()
        if take:
            self.delete(job, key)
        return lease.meta, data

    def read_many(
        self, job: str, keys: Sequence[str], limit: int, *, take: bool = False
    ) -> list[tuple[ObjectMeta, bytes] | PocketError | None]:
        """:meth:`read_small` of each key, in order: a copy of each value of at most ``limit``
        bytes, None for a larger one (lease it instead), the error for one that is absent or
        expired (a batch answers per key, so a miss does not fail the others).

        A driver may serve the whole batch in one step (one lock, one pass over its index).
        """
        out: list[tuple[ObjectMeta, bytes] | PocketError | None] = []
        for key in keys:
            try:
                out.append(self.read_small(job, key, limit, take=take))
            except NotFoundError as exc:
                out.append(exc)
        return out

    @abc.abstractmethod
    def stat(self, job: str, key: str) -> ObjectMeta:
        """The object's metadata; NotFoundError if it is absent."""

    @abc.abstractmethod
    def delete(self, job: str, key: str) -> bool:
        """Delete one object; False if it was absent."""

    @abc.abstractmethod
    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        """Keys of ``job`` starting with ``prefix`` and sorting after ``after``, in order.

        Returns at most ``limit`` keys and whether more follow.
        """

    @abc.abstractmethod
    def delete_prefix(self, job: str, prefix: str) -> int:
        """Delete every object of ``job`` whose key starts with ``prefix``; returns the count."""

    @abc.abstractmethod
    def delete_job(self, job: str) -> int:
        """Delete every object of ``job``; returns the count."""

    @abc.abstractmethod
    def expire(self, now: float) -> int:
        """Delete objects whose TTL passed before ``now``; returns the count."""

    @abc.abstractmethod
    def stats(self) -> TierStats:
        """Capacity accounting."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the medium (unmap memory, close files)."""

    # -- conveniences built on the primitives ------------------------------------------------
    def exists(self, job: str, key: str) -> bool:
        """Whether the object is present."""
        try:
            self.stat(job, key)
        except NotFoundError:
            return False
        return True

    def put(
        self,
        job: str,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        checksum: int | None = None,
        flags: int = 0,
        ttl: float | None = None,
    ) -> ObjectMeta:
        """Store a value held in memory (reserve, copy, commit)."""
        from ..protocol import checksum as xxh

        view = memoryview(data).cast("B")
        res = self.reserve(len(view))
        try:
            res.fill(view)
        except BaseException:
            self.abort(res)
            raise
        return self.commit(
            res, job, key, checksum=xxh(view) if checksum is None else checksum, flags=flags,
            ttl=ttl,
        )  # fmt: skip

    def get(self, job: str, key: str) -> bytes:
        """A copy of a stored value."""
        with self.lease(job, key) as lease:
            return lease.tobytes()

    def __enter__(self) -> TierDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BUILTIN = {
    "dram": "pocketlib.tiers.dram:DramTier",
    "nvme": "pocketlib.tiers.nvme:NvmeTier",
    "hdd": "pocketlib.tiers.hdd:HddTier",
    "s3": "pocketlib.tiers.s3:S3Tier",
}


def available_drivers() -> dict[str, str]:
    """Driver names and the ``module:Class`` each loads from."""
    found = dict(_BUILTIN)
    for ep in entry_points(group="pocketlib.tiers"):
        found[ep.name] = ep.value
    return found


def load_driver(name: str) -> type[TierDriver]:
    """The driver class registered as ``name``."""
    import importlib

    target = available_drivers().get(name)
    if target is None:
        known = ", ".join(sorted(available_drivers()))
        raise ConfigError(f"no tier driver named {name!r} (installed: {known})")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, TierDriver)):
        raise ConfigError(f"{target} is not a TierDriver")
    return cls
