"""The floor a job's operations stand on: one value on one node, and what a stat reports.

:class:`JobBase` adds to the routes (:class:`~pocketlib.client.routes.RoutedJob`) the single
PUT on a node (through shared memory when the node is on this host), a value's encoding and a
key's existence. The reads (:mod:`pocketlib.client.reads`), listing
(:mod:`pocketlib.client.listing`), stripes, batches and ranges build on it; the public
:class:`~pocketlib.client.job.Job` on all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import lz4.block

from ..connection import Connection
from ..errors import NotFoundError, PocketError, RequestError
from ..protocol import Buffer, Flag, Op, ResponseHeader, checksum, validate_key
from ..ticket import Ticket
from . import shared
from .routes import RoutedJob

if TYPE_CHECKING:
    from .calls import ClientCalls

__all__ = ["JobBase", "ObjectInfo"]

_PUT = int(Op.PUT)
#: Values from this size are written through shared memory when the node is on this host:
#: two round trips (SHM_RESERVE, SHM_COMMIT) instead of one, which the copies saved repay
#: only from about this size (docs/tiers.md, "Co-located fast path").
SHARED_PUT_MIN = 256 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What :meth:`Job.stat` reports about an object."""

    key: str
    #: Stored size in bytes (compressed size if ``compressed``).
    size: int
    checksum: int
    version: int
    compressed: bool
    created: float
    #: Expiry time (seconds since the epoch), or None.
    expires: float | None
    #: Stored as chunks over the job's nodes (size and checksum are the whole value's).
    striped: bool = False
    #: The value's own length, as :meth:`Job.get` returns it (``size`` unless compressed).
    length: int = -1

    def __post_init__(self) -> None:
        if self.length < 0:
            object.__setattr__(self, "length", self.size)


class JobBase(RoutedJob):
    """A job's routes, and the single-node operations every other part uses."""

    def __init__(
        self, client: ClientCalls, ticket: Ticket, tokens: Mapping[str, bytes] | None = None
    ) -> None:
        self.client = client
        self._owns_client = False
        self._readers: dict[str, Callable[[Connection, ResponseHeader], bytes]] = {}
        self._use(ticket, tokens)

    def _encode(
        self, key: str, data: Buffer, compress: bool, persist: bool
    ) -> tuple[str, bytes, Buffer, int]:
        """The node, raw key, value and flags a put of ``data`` under ``key`` sends."""
        node, raw = self._route(key)
        view, flags = prepare_value(data, compress)
        if persist:
            flags |= Flag.PERSIST
        return node, raw, view, flags

    def _put_at(
        self,
        node: str,
        raw: bytes,
        view: Buffer,
        flags: int,
        ttl_ms: int,
        value_checksum: int | None = None,
    ) -> bytes | None:
        """One PUT on ``node`` (``value_checksum`` if the caller has it); with flag REPLACED,
        the manifest of a striped value replaced."""
        if len(view) >= SHARED_PUT_MIN:
            arena = self.client.arena(node)
            if arena is not None:  # (it hashes the value while the node reserves its space)
                value = memoryview(view).cast("B")
                return shared.put(
                    self.client, arena, node, self._prefix(node), raw, value, flags, ttl_ms,
                    value_checksum,
                )  # fmt: skip
        if value_checksum is None:
            value_checksum = checksum(view)
        h, old = self.client.call(
            node, _PUT, self._job, self._tokens[node], raw, body=(view,), flags=flags,
            ttl_ms=ttl_ms, value_checksum=value_checksum, map_version=self._version,
        )  # fmt: skip
        return bytes(old) if h.flags & Flag.STRIPED else None

    def _prefix(self, node: str) -> tuple[bytes, bytes, int]:
        return self._job, self._tokens[node], self._version

    def stat(self, key: str) -> ObjectInfo:
        """Size, checksum, version and lifetime of ``key``; NotFoundError if absent."""
        return self._read(key, lambda n, r: self._stat_at(n, r, key))

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        raw = validate_key(key)

        def ask() -> bool:
            nodes = [self._node_for(raw)] if self._single else self.router.read_nodes(raw)
            return any(self._call(n, Op.EXISTS, raw)[0].size for n in nodes if n not in self._gone)

        return self._fresh(ask)

    # The reads dispatch to a striped value's chunks; :mod:`pocketlib.client.stripes` and the
    # batches, below the reads, reach them through these.
    def _value(self, flags: int, raw: bytes, data: Buffer, delete_after_read: bool) -> bytes:
        raise NotImplementedError  # the reads'

    def _get_into_at(
        self, node: str, raw: bytes, key: str, buffer: Buffer, delete_after_read: bool
    ) -> int:
        raise NotImplementedError  # the reads'

    def _stat_at(self, node: str, raw: bytes, key: str) -> ObjectInfo:
        raise NotImplementedError  # the reads'


def prepare_value(data: Buffer, compress: bool) -> tuple[Buffer, int]:
    if compress:
        return lz4.block.compress(data, store_size=True), Flag.LZ4
    if type(data) is bytes:  # the common case needs no view
        return data, 0
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view, 0


def ttl_millis(ttl: float | None) -> int:
    if ttl is None:
        return 0
    if ttl <= 0:
        raise RequestError("ttl must be positive seconds")
    return max(1, round(ttl * 1000))


def too_small(key: str, need: int, have: int) -> PocketError:
    return RequestError(f"{key!r} is {need} bytes; the buffer holds {have}")


def not_found(key: str) -> NoReturn:
    raise NotFoundError(f"no object {key!r}")
