"""A job's view of the store: put, get and the rest, routed by the job's weight maps.

Writes route by the newest weight map; reads look at the newest version's node first and at
older versions' nodes on a miss, so a key written before the job's placement changed is still
found. Every value is checked against the checksum its writer computed. A value above the
job's stripe size is striped over its nodes (:mod:`pocketlib.client.stripes`); put_many and get_many
batch per node (:mod:`pocketlib.client.batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import CapacityError, DrainingError, RequestError, StaleTicketError, TransportError
from ..protocol import Buffer, Flag, Op, validate_key
from . import batch, shared, stripes
from .base import SHARED_PUT_MIN, ObjectInfo, not_found, ttl_millis
from .listing import Listing
from .reads import Reads
from .streams import ObjectReader, ObjectWriter

__all__ = ["Job", "ObjectInfo"]

_STRIPED = Flag.STRIPED
#: What makes a write refresh the job's ticket and try again: a node draining, full or gone,
#: or one that knows a newer weight map than the ticket's.
_WRITE_RETRIES = (DrainingError, TransportError, CapacityError, StaleTicketError)


class Job(Reads, Listing):
    """A job's view of the store: every operation is scoped to the job's namespace."""

    def deregister(self) -> dict[str, Any]:
        """Free the job's allocation and all its data on every node (controller jobs)."""
        return self.client.deregister_job(self)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        ttl: float | None = None,
        compress: bool = False,
        persist: bool = False,
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous value.

        ``ttl`` (seconds) makes the node delete the object after that long; ``compress``
        stores it lz4-compressed (the reader decompresses transparently); ``persist`` also
        writes it through to the node's persist tier (S3), so it outlives :meth:`purge`. A
        value (compressed, if ``compress``) above the job's stripe size is striped.
        """
        put = lambda: self._put(key, data, ttl, compress, persist)  # noqa: E731
        self._fresh(put, _WRITE_RETRIES, settle=True)

    def put_filled(
        self, key: str, size: int, fill: Callable[[memoryview], None], *, ttl: float | None = None
    ) -> None:
        """Store a value of ``size`` bytes that ``fill(view)`` writes into the writable
        ``view`` it is given: the node's own memory when the node is on this host (the value
        is made in place, with no copy), else a fresh buffer that is then put. ``fill`` may be
        called again if the put is repeated (a newer ticket); it must fill all of ``view``."""
        raw = validate_key(key)
        ttl_ms = ttl_millis(ttl)

        def put() -> None:
            node = self._node_for(raw)
            in_place = SHARED_PUT_MIN <= size <= self._stripe_above
            arena = self.client.arena(node) if in_place else None
            if arena is None:
                buf = memoryview(bytearray(size))
                fill(buf)
                self._put_whole_or_striped(node, raw, buf, 0, ttl)
            else:
                replacing = Flag.REPLACED if self._may_stripe else 0
                old = shared.put_filled(self.client, arena, node, self._prefix(node), raw, size,
                                        fill, replacing, ttl_ms)  # fmt: skip
                if old is not None:
                    stripes.drop_chunks(self, raw, old)
            if not self._single:
                self._drop_older(raw)

        self._fresh(put, _WRITE_RETRIES, settle=True)

    def _put(
        self, key: str, data: Buffer, ttl: float | None, compress: bool, persist: bool
    ) -> None:
        node, raw, view, flags = self._encode(key, data, compress, persist)
        self._put_whole_or_striped(node, raw, view, flags, ttl)
        if not self._single:  # once it is stored: copies older weight maps placed elsewhere
            self._drop_older(raw)

    def _put_whole_or_striped(
        self, node: str, raw: bytes, view: Buffer, flags: int, ttl: float | None
    ) -> None:
        if len(view) > self._stripe_above:
            stripes.put(self, raw, view, flags, ttl_millis(ttl))
            return
        # Where striped values may exist, the put asks the node for the manifest of a striped
        # value it replaces (flag REPLACED), whose chunks then go too.
        replacing = Flag.REPLACED if self._may_stripe else 0
        old = self._put_at(node, raw, view, flags | replacing, ttl_millis(ttl))
        if old is not None:
            stripes.drop_chunks(self, raw, old)

    def copy(self, src: str, dst: str) -> None:
        """Store the value of ``src`` under ``dst`` too (replacing what ``dst`` held).

        When the node that holds ``src`` is the one ``dst`` goes to, the node copies it and
        no byte crosses the network; otherwise (and for a striped value) the value passes
        through this process. NotFoundError if ``src`` is absent.
        """
        raw_dst = validate_key(dst)

        def copy() -> None:
            node = self._node_for(raw_dst)
            on_node = lambda n, raw: n == node and self._copy_at(n, raw, raw_dst)  # noqa: E731
            if not self._read(src, on_node):
                self._put(dst, self.get(src), None, False, False)
            elif not self._single:
                self._drop_older(raw_dst)

        self._fresh(copy, _WRITE_RETRIES, settle=True)

    def _copy_at(self, node: str, raw: bytes, raw_dst: bytes) -> bool:
        """COPY on ``node``; False if it left the copy to the client (a striped value)."""
        replacing = Flag.REPLACED if self._may_stripe else 0
        h, old = self._call(node, Op.COPY, raw, body=(raw_dst,), flags=replacing)
        if h.flags & _STRIPED:
            return False
        if h.flags & Flag.REPLACED:
            stripes.drop_chunks(self, raw_dst, bytes(old))
        return True

    def delete(self, key: str) -> bool:
        """Delete ``key``; returns whether it existed (a missing key is not an error)."""
        raw = validate_key(key)

        found = False  # over every attempt: a repeated delete finds what the first one took

        def delete() -> bool:
            nonlocal found
            nodes = [self._node_for(raw)] if self._single else self.router.read_nodes(raw)
            # Every version's copy goes, or an older one would resurface.
            for node in nodes:
                if node not in self._gone:
                    found = self._delete_at(node, raw) or found
            return found

        return self._fresh(delete, settle=True)

    def _delete_at(self, node: str, raw: bytes) -> bool:
        if self._may_stripe:  # a striped value's chunks go with it
            return stripes.delete_at(self, node, raw)
        return bool(self._call(node, Op.DELETE, raw)[0].size)

    def put_many(
        self,
        items: Mapping[str, Buffer],
        *,
        ttl: float | None = None,
        compress: bool = False,
        persist: bool = False,
    ) -> None:
        """Store many values, batched per node and pipelined (options as for :meth:`put`).

        Raises the first error after trying every item; items that succeeded stay stored.
        """
        ttl_ms = ttl_millis(ttl)
        # (Puts are idempotent: a retry puts every item again.)
        put = lambda: batch.put_many(self, items, ttl_ms, compress, persist)  # noqa: E731
        self._fresh(put, _WRITE_RETRIES, settle=True)

    def get_many(self, keys: Iterable[str], *, delete_after_read: bool = False) -> dict[str, bytes]:
        """Values of the keys that exist (missing keys are left out), batched and pipelined."""
        wanted = {validate_key(key): key for key in keys}
        out: dict[str, bytes] = {}

        def fetch() -> dict[str, bytes]:
            # A repeat (after a refresh) asks only for what is not in: values already taken
            # are kept, since delete-after-read is done for them.
            rest = [raw for raw, key in wanted.items() if key not in out]
            batch.get_many(self, rest, delete_after_read, out)
            return out

        return self._fresh(fetch)

    def wait_for(self, keys: Iterable[str], *, timeout: float | None = None) -> None:
        """Return once every key of ``keys`` is stored: the nodes that will store them answer
        when they are (no polling); PocketTimeoutError after ``timeout`` seconds."""
        from .waiting import wait_for

        wait_for(self, keys, timeout)

    def writer(
        self, key: str, *, ttl: float | None = None, chunk_size: int = 4 * 1024 * 1024
    ) -> ObjectWriter:
        """A file-like writer for a value too large to hold in memory.

        The value becomes visible when the writer is closed; if it is abandoned (an exception
        inside ``with``), nothing is stored. Streamed values are not striped. A writer cannot
        send its value again: if the job's weight map changed since this handle's ticket, close
        raises StaleTicketError, stores nothing and leaves the handle refreshed, so a new
        writer routes by the newer map.
        """
        node, raw = self._route(key)
        return ObjectWriter(
            self.client.pools[node], self._job, self._tokens[node], raw, ttl_ms=ttl_millis(ttl),
            chunk_size=chunk_size, map_version=self._version,
            on_stale=functools.partial(self._refreshed, self.ticket),
        )  # fmt: skip

    def reader(self, key: str, *, chunk_size: int = 4 * 1024 * 1024) -> ObjectReader:
        """A file-like reader fetching the value in ranges of ``chunk_size``.

        The whole value's checksum is verified when the last byte is read; ConflictError if the
        key is overwritten or deleted while it is being read.
        """
        info = self.stat(key)
        if info.compressed or info.striped:
            how = "compressed" if info.compressed else "striped"
            raise RequestError(f"{key!r} is {how}: read it with get(), get_into() or get_range()")
        raw = validate_key(key)
        node = self._read(
            key, lambda n, r: n if self._call(n, Op.EXISTS, r)[0].size else not_found(key)
        )
        return ObjectReader(self.client, node, self._job, self._tokens[node], raw, info.size,
                            info.version, info.checksum, chunk_size, self._version)  # fmt: skip

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each node's stats (see :meth:`Client.node_stats`)."""
        return self.client.node_stats(self._live_nodes)

    def purge(self) -> int:
        """Delete every object of this job on every node and close the job there."""
        return self._on_every_node(Op.JOB_DELETE)

    def close(self) -> None:
        """Close connections (the job's data stays stored until purged)."""
        if self._owns_client:
            stripes.shutdown(self.client)
            self.client.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Job {self.ticket.job!r} on {len(self._live_nodes)} node(s)>"
