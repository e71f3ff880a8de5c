"""S3 tier: values as objects under a bucket prefix, on AWS S3 or any S3-compatible store.

Layout. An object is stored at ``<prefix>/<job>/<key>``, job and key each escaped into one
path segment; :mod:`pocketlib.tiers.s3names` has the rules and the metadata written with it.

Writes. A reservation is memory (``bytearray`` chunks); commit uploads it with one PUT, or as a
multipart upload when it is larger than ``multipart_threshold``: a reservation's chunks, and the
reservations a streamed put is joined from, are uploaded as parts in parallel, each its own
part when it is at least 5 MiB (S3's minimum for all but the last part), smaller ones merged
with their neighbours. Commits and deletes of one key are serialized by a per-key lock so the
bucket and the index always agree on which version a key holds.

Index. What the tier stored is kept in memory (job -> key -> metadata), so stat, list and stats
never go to S3; at construction the index is rebuilt from a listing of the prefix (and a HEAD
per object, in parallel), so a node restarted over the same bucket serves what it held.
Checksums are verified lazily, on read: a mismatch raises ChecksumError and the bytes are never
handed out. One node owns a prefix: two live tiers over the same prefix would not see each
other's writes.

Requests to S3 and what their errors mean are in :mod:`pocketlib.tiers.s3requests`; lookups,
deletes and the per-key locks in :mod:`pocketlib.tiers.s3index`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import CapacityError, ConfigError
from ..protocol import Hasher
from ..protocol import checksum as xxh3
from .base import Capabilities, Lease, ObjectMeta, Reservation, TierDriver, TierStats
from .objindex import Entry, ObjectIndex
from .s3index import S3Index, S3Object
from .s3names import (
    MAX_PARTS,
    MIN_PART,
    NAME_MAX,
    decode_segment,
    encode_segment,
    object_naming,
    parse_meta,
    parse_name,
)

__all__ = ["S3Tier", "decode_segment", "encode_segment"]

log = logging.getLogger(__name__)

MiB = 1 << 20
#: S3's largest part.
MAX_PART = 5 << 30


class S3Tier(S3Index, TierDriver):
    """Values as objects in ``bucket`` under ``prefix``; see the module docs for the layout."""

    name = "s3"
    capabilities = Capabilities(shared_memory=False, persistent=True, zero_copy=False)

    def __init__(
        self,
        capacity: int,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
        multipart_threshold: int = 8 * MiB,
        timeout: float = 10.0,
    ) -> None:
        if capacity <= 0:
            raise ConfigError("an S3 tier needs a capacity above zero")
        if not bucket:
            raise ConfigError("an S3 tier needs a bucket")
        if multipart_threshold < 0:
            raise ConfigError("multipart_threshold must not be negative")
        if timeout <= 0:
            raise ConfigError("timeout must be above zero")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        if len(self._base.encode()) > NAME_MAX // 2:
            raise ConfigError(f"S3 prefix {self.prefix!r} is too long")
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.timeout = timeout
        self._own_client = client is None
        self._client = client if client is not None else self._make_client(endpoint_url, timeout)
        if endpoint_url is None:
            endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
            self.endpoint_url = endpoint if isinstance(endpoint, str) else None
        self._lock = threading.Lock()
        self._index: ObjectIndex[S3Object] = ObjectIndex(capacity)
        self._key_locks = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pocket-s3")
        #: Objects under the prefix that recovery could not read as the tier's own.
        self.skipped: list[str] = []
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_options(cls, capacity: int, path: str | None = None) -> TierDriver:
        """``--path s3://bucket/prefix``; the endpoint is read from ``POCKET_S3_ENDPOINT`` (or
        ``AWS_ENDPOINT_URL``), credentials from the usual boto3 environment."""
        if path is None:
            raise ConfigError("the s3 tier needs --path s3://bucket/prefix")
        url = urllib.parse.urlsplit(path)
        if url.scheme != "s3" or not url.netloc:
            raise ConfigError(f"the s3 tier needs --path s3://bucket/prefix, not {path!r}")
        endpoint = os.environ.get("POCKET_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        return cls(capacity, bucket=url.netloc, prefix=url.path, endpoint_url=endpoint or None)

    @property
    def capacity(self) -> int:
        return self._index.capacity

    # -- naming -------------------------------------------------------------------------------
    def object_name(self, job: str, key: str) -> str:
        """The S3 key of ``key`` in ``job``."""
        return self._naming(job, key)[0]

    def _naming(self, job: str, key: str) -> tuple[str, dict[str, str]]:
        """The object name, and the metadata that must carry job or key if it is hashed."""
        return object_naming(self._base, job, key)

    def _parse_name(self, name: str, raw: dict[str, str]) -> tuple[str, str] | None:
        """Job and key of an object name (with its metadata), or None if it is not ours."""
        return parse_name(self._base, name, raw)

    # -- write path ---------------------------------------------------------------------------
    def _part_size(self, nbytes: int) -> int:
        size = max(self.multipart_threshold, MIN_PART, -(-nbytes // (MAX_PARTS - 1)))
        return min(size, MAX_PART)

    def _charge(self, nbytes: int) -> None:
        with self._lock:
            ix = self._index
            free = ix.capacity - ix.used
            if nbytes > free:
                raise CapacityError(
                    f"s3 tier is full: {nbytes} bytes requested, {free} of {ix.capacity} free"
                )
            ix.charge(nbytes)

    def _uncharge(self, nbytes: int) -> None:
        with self._lock:
            self._index.used -= nbytes

    def reserve(self, nbytes: int) -> Reservation:
        if nbytes < 0:
            raise ValueError("negative size")
        self._charge(nbytes)
        try:
            if nbytes <= self.multipart_threshold:
                chunks = [bytearray(nbytes)]
            else:  # one buffer per part: parts upload straight from them
                step = self._part_size(nbytes)
                chunks = [bytearray(min(step, nbytes - at)) for at in range(0, nbytes, step)]
        except BaseException:
            self._uncharge(nbytes)
            raise
        return Reservation(nbytes, [memoryview(c) for c in chunks], nbytes, chunks)

    def abort(self, res: Reservation) -> None:
        with self._lock:
            if res.done:
                return
            res.done = True
            self._index.used -= res.charged
        res.loc = None

    def join(self, parts: list[Reservation]) -> Reservation:
        if any(p.done for p in parts):
            raise ValueError("reservation already committed or aborted")
        for p in parts:
            p.done = True
        chunks = [c for p in parts for c in p.loc]
        buffers = [b for p in parts for b in p.buffers]
        size = sum(p.size for p in parts)
        return Reservation(size, buffers, sum(p.charged for p in parts), chunks)

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
        """Upload the value and make it visible. If this raises, the reservation is given back
        (an ``abort`` afterwards does nothing)."""
        with self._lock:
            if res.done:
                raise ValueError("reservation already committed or aborted")
            res.done = True  # claimed: from here on this call gives the charge back on failure
        try:
            name, extra = self._naming(job, key)
            chunks: list[bytearray] = res.loc
            return self._store(job, key, name, extra, chunks, res.size, res.charged,
                               checksum, flags, ttl)  # fmt: skip
        except BaseException:
            self._uncharge(res.charged)
            raise
        finally:
            res.loc = None

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
        """Upload a value held in memory (one copy, made before the upload)."""
        name, extra = self._naming(job, key)
        body = bytearray(data)
        nbytes = len(body)
        if checksum is None:
            checksum = xxh3(body)
        self._charge(nbytes)
        try:
            return self._store(job, key, name, extra, [body], nbytes, nbytes, checksum, flags, ttl)
        except BaseException:
            self._uncharge(nbytes)
            raise

    def _store(
        self,
        job: str,
        key: str,
        name: str,
        extra: dict[str, str],
        chunks: list[bytearray],
        size: int,
        charged: int,
        checksum: int,
        flags: int,
        ttl: float | None,
    ) -> ObjectMeta:
        """Upload charged chunks as ``key`` and publish it (the charge moves to the object)."""
        now = time.time()
        if len(chunks) == 1:
            digest = xxh3(chunks[0])
        else:
            hasher = Hasher()
            for chunk in chunks:
                hasher.update(chunk)
            digest = hasher.intdigest()
        with self._key_locked([(job, key)]):
            with self._lock:
                self._index.version += 1
                version = self._index.version
            meta = ObjectMeta(size, checksum, flags, version, now, now + ttl if ttl else 0.0)
            metadata = {
                "size": str(size),
                "checksum": str(checksum),
                "xxh3": str(digest),
                "flags": str(flags),
                "version": str(version),
                "created": repr(meta.created),
                "expires": repr(meta.expires),
                **extra,
            }
            self._upload(name, chunks, size, metadata)
            with self._lock:
                self._index.insert(Entry(meta, S3Object(name, digest), charged, job, key))
        return meta

    # -- read path ----------------------------------------------------------------------------
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        if take:
            lease = self._take(job, key, None)
            assert lease is not None
            return lease
        attempts = 4
        for attempt in range(attempts):
            with self._lock:
                stored = self._index.find(job, key, drop_expired=False)
                stored.refs += 1
            try:
                data, raw = self._fetch(stored.loc.name)
                found = parse_meta(raw)
                meta, digest = stored.meta, stored.loc.digest
                if found is not None and found[0].version != meta.version:
                    # Overwritten between the index lookup and the GET: look again, and if it
                    # keeps moving serve what was read, checked against its own metadata.
                    if attempt < attempts - 1:
                        self._release(stored)
                        time.sleep(0.005 * (attempt + 1))
                        continue
                    meta, digest = found
                self._verify(stored.loc.name, data, meta.size, digest)
            except BaseException:
                self._release(stored)
                raise
            return Lease(meta, [memoryview(data).toreadonly()], self._release, stored)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_small(
        self, job: str, key: str, limit: int, *, take: bool = False
    ) -> tuple[ObjectMeta, bytes] | None:
        """Sizes come from the index: a value over ``limit`` is not fetched at all."""
        if take:
            lease = self._take(job, key, limit)
            if lease is None:
                return None
        else:
            if self.stat(job, key).size > limit:
                return None
            lease = self.lease(job, key)
        with lease:
            return lease.meta, lease.tobytes()

    def _take(self, job: str, key: str, limit: int | None) -> Lease | None:
        """Read and delete in one step (None if the value is over ``limit``)."""
        with self._key_locked([(job, key)]):
            with self._lock:
                stored = self._index.find(job, key, drop_expired=False)
                if limit is not None and stored.meta.size > limit:
                    return None
                stored.refs += 1
            try:
                data, _ = self._fetch(stored.loc.name)
                self._verify(stored.loc.name, data, stored.meta.size, stored.loc.digest)
                self._delete_names([stored.loc.name])
                with self._lock:
                    self._index.discard(stored)
            except BaseException:
                self._release(stored)
                raise
        return Lease(stored.meta, [memoryview(data).toreadonly()], self._release, stored)

    # -- accounting ---------------------------------------------------------------------------
    def stats(self) -> TierStats:
        with self._lock:
            return self._index.stats(self.name)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_client:
            close = getattr(self._client, "close", None)  # botocore 1.29+: its connection pool
            if close is not None:
                close()

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the index from what is stored under the prefix."""
        found = self._scan()
        if not found:
            return
        for name, raw in found:
            parsed = parse_meta(raw)
            ids = self._parse_name(name, raw) if parsed is not None else None
            if parsed is None or ids is None:
                self.skipped.append(name)
                continue
            (meta, digest), (job, key) = parsed, ids
            with self._lock:
                ix = self._index
                old = ix.get(job, key)
                if old is not None and old.meta.version >= meta.version:
                    continue
                ix.version = max(ix.version, meta.version)
                ix.used += meta.size
                ix.insert(Entry(meta, S3Object(name, digest), meta.size, job, key))
        self._index.peak = self._index.used
        if self.skipped:
            log.warning(
                "s3 tier: %d objects under s3://%s/%s are not the tier's own; left alone",
                len(self.skipped), self.bucket, self._base,
            )  # fmt: skip
        if self._index.used > self._index.capacity:
            log.warning(
                "s3 tier: s3://%s/%s holds %d bytes, over the capacity %d; puts are refused "
                "until enough is deleted",
                self.bucket, self._base, self._index.used, self._index.capacity,
            )  # fmt: skip
