"""A job's listing: keys (and their details) under a prefix, merged from every node a page at
a time, and deletes of a whole prefix or job on every node."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..bodies import LIST_INFO, Entry, decode_entries, decode_keys
from ..errors import NotFoundError, TransportError
from ..protocol import Flag, Op, ResponseHeader, validate_prefix
from . import stripes
from .base import JobBase, ObjectInfo

__all__ = ["Listing"]

T = TypeVar("T")

_LZ4, _STRIPED = Flag.LZ4, Flag.STRIPED


class Listing(JobBase):
    """The listing half of :class:`~pocketlib.client.job.Job`."""

    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[str]:
        """Keys starting with ``prefix``, in sorted order, fetched a page at a time (the
        chunks of striped values are not listed)."""
        raw_prefix = validate_prefix(prefix)
        streams = [self._list_node(node, raw_prefix, page_size, first)
                   for node, first in self._first_pages(raw_prefix, page_size, False)]  # fmt: skip
        return heapq.merge(*streams)

    def _first_pages(
        self, prefix: bytes, page_size: int, detail: bool
    ) -> Sequence[tuple[str, tuple[ResponseHeader, Any]]]:
        """Every live node's first page now: a node that knows a newer weight map refuses
        it, and the listing starts again over the newer map's nodes."""
        return self._fresh(lambda: [(n, self._list_page(n, prefix, b"", page_size, detail))
                                    for n in self._live_nodes])  # fmt: skip

    def list_info(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """What :meth:`stat` would say of each key starting with ``prefix``, in key order,
        a page of keys and their details per request (not a request per key)."""
        raw_prefix = validate_prefix(prefix)
        streams = [self._list_infos(node, raw_prefix, page_size, first)
                   for node, first in self._first_pages(raw_prefix, page_size, True)]  # fmt: skip
        return heapq.merge(*streams, key=lambda info: info.key)

    def _list_infos(
        self, node: str, prefix: bytes, page_size: int, page: tuple[ResponseHeader, Any]
    ) -> Iterator[ObjectInfo]:
        pages = self._pages(node, prefix, page_size, page, True, decode_entries, _entry_key)
        for entry in (e for entries in pages for e in entries):
            if entry.status or _chunk(entry.key):
                continue  # (deleted since the node read the page; a striped value's chunk)
            key = entry.key.decode()
            if entry.flags & _STRIPED:  # the manifest's: its size is not the value's
                with contextlib.suppress(NotFoundError):  # (deleted meanwhile)
                    yield self.stat(key)
                continue
            size, version, created, expires, length = LIST_INFO.unpack(entry.value)
            yield ObjectInfo(key, size, entry.checksum, version, bool(entry.flags & _LZ4),
                             created, expires or None, length=length)  # fmt: skip

    def _list_page(
        self, node: str, prefix: bytes, cursor: bytes, page_size: int, detail: bool = False
    ) -> tuple[ResponseHeader, Any]:
        flags = Flag.DETAIL if detail else 0
        return self._call(node, Op.LIST, prefix, body=[cursor], arg=page_size, flags=flags)

    def _list_node(
        self, node: str, prefix: bytes, page_size: int, page: tuple[ResponseHeader, Any]
    ) -> Iterator[str]:
        for keys in self._pages(node, prefix, page_size, page, False, decode_keys, bytes):
            yield from (k.decode() for k in keys if not _chunk(k))

    def _pages(
        self,
        node: str,
        prefix: bytes,
        page_size: int,
        page: tuple[ResponseHeader, Any],
        detail: bool,
        decode: Callable[[bytes], Sequence[T]],
        key_of: Callable[[T], bytes],
    ) -> Iterator[Sequence[T]]:
        """One node's listing, page after page, from its first ``page``."""
        before = self.ticket
        while True:
            h, body = page
            items = decode(body)
            yield items
            if not (h.flags & Flag.MORE) or not items:
                return
            try:
                page = self._list_page(node, prefix, key_of(items[-1]), page_size, detail)
            except TransportError:
                if self._refreshed(before) and node in self._gone and node not in self._lost:
                    return  # retired once it held none of the job's data
                raise

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many objects were deleted
        (each chunk of a striped value counts as one)."""
        raw = validate_prefix(prefix)
        return self._on_every_node(Op.DELETE_PREFIX, raw)

    def _on_every_node(self, op: int, key: bytes = b"") -> int:
        """``op`` on each of the job's live nodes (under the newest ticket, if a node knows a
        newer one); the total of what they answered, over every attempt."""
        total = 0

        def each() -> int:
            nonlocal total
            for node in self._live_nodes:
                total += self._call(node, op, key)[0].size
            return total

        return self._fresh(each, settle=True)


def _chunk(raw: bytes) -> bool:
    return b"\0" in raw and stripes.is_chunk_key(raw)


def _entry_key(entry: Entry) -> bytes:
    return entry.key
