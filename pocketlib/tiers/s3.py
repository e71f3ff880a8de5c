"""S3 tier: values as objects under a bucket prefix, on AWS S3 or any S3-compatible store.

Layout. An object is stored at ``<prefix>/<job>/<key>`` where job and key are each one path
segment, escaped so that any UTF-8 job and key make a valid object key on AWS and on stores
that keep keys as file paths (SeaweedFS, MinIO): ``/``, ``\\``, ``%``, ``~``, control
characters and the two XML-illegal characters U+FFFE/U+FFFF become ``%XX`` (of their UTF-8
bytes), and so does a leading ``.`` (a segment may never be ``.`` or ``..``). Everything else,
non-ASCII included, is kept as it is, so object names stay readable and a key prefix maps to an
object-name prefix (``aws s3 ls s3://bucket/prefix/job/tmp%2F`` lists keys starting ``tmp/``).
Escaping ``/`` matters: keys ``a`` and ``a/b`` would otherwise be a file and a directory of the
same name on a path-based store. A segment longer than 255 bytes (a file-name limit of
path-based stores) or a name over S3's 1024 bytes is replaced by ``~`` + the SHA-256 of the
text, and the job or key is then kept in object metadata; ``~`` is always escaped otherwise, so
a hashed name never equals an escaped one.

Metadata (``x-amz-meta-*``): ``size``, ``checksum`` (the checksum the node was given),
``xxh3`` (computed by the tier over the stored bytes, verified on every read), ``flags``,
``version``, ``created``, ``expires`` (0: never), and for hashed names ``job``/``key``
(base64url of the UTF-8).

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

Errors: a missing object is NotFoundError; an endpoint that cannot be reached is ConnectError,
one that does not answer in ``timeout`` seconds PocketTimeoutError (both TransportError); an
unknown bucket or refused credentials ConfigError; anything else S3 answers ServerError.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import (
    CapacityError,
    ChecksumError,
    ConfigError,
    ConnectError,
    InvalidKeyError,
    NotFoundError,
    PocketError,
    PocketTimeoutError,
    ServerError,
    TransportError,
)
from ..protocol import Hasher
from ..protocol import checksum as xxh3
from .base import Capabilities, Lease, ObjectMeta, Reservation, TierDriver, TierStats
from .s3names import (
    MAX_PARTS,
    MIN_PART,
    b64,
    decode_segment,
    encode_segment,
    hashed,
    parse_meta,
    plan_parts,
    unb64,
)

__all__ = ["S3Tier", "decode_segment", "encode_segment"]

log = logging.getLogger(__name__)

MiB = 1 << 20
#: S3's largest part.
MAX_PART = 5 << 30
#: Longest path segment that path-based stores (SeaweedFS, MinIO) accept, and S3's longest key.
SEGMENT_MAX = 255
NAME_MAX = 1024
#: Objects up to this size are read with one call; larger ones into one preallocated buffer.
_READ_WHOLE = 4 * MiB
_READ_CHUNK = 1 * MiB
#: Keys per DeleteObjects request (S3's maximum).
_DELETE_BATCH = 1000

#: S3 error codes that mean the credentials are wrong (a configuration problem).
_CREDENTIAL_ERRORS = frozenset(
    ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")
)


@dataclass(slots=True)
class _Stored:
    meta: ObjectMeta
    #: xxh3 of the stored bytes (what reads are verified against).
    digest: int
    #: The object's S3 key.
    name: str
    refs: int = 0
    dead: bool = False


class _JobIndex:
    """One job's objects, with a lazily sorted key list for paged LIST."""

    __slots__ = ("objects", "sorted_keys", "used")

    def __init__(self) -> None:
        self.objects: dict[str, _Stored] = {}
        self.sorted_keys: list[str] | None = None
        self.used = 0


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class S3Tier(TierDriver):
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
        self._jobs: dict[str, _JobIndex] = {}
        self._expiry: list[tuple[float, int, str, str]] = []
        self._key_locks: dict[tuple[str, str], _KeyLock] = {}
        self._version = 0
        self._capacity = capacity
        self._used = 0
        self._peak = 0
        self._objects = 0
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pocket-s3")
        #: Objects under the prefix that recovery could not read as the tier's own.
        self.skipped: list[str] = []
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _make_client(endpoint_url: str | None, timeout: float) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigError("the s3 tier needs boto3: pip install 'pocketlib[aws]'") from exc
        options: dict[str, Any] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 2},
            "max_pool_connections": 32,
        }
        if endpoint_url is not None:
            # S3-compatible servers are addressed by path (no bucket DNS names).
            options["s3"] = {"addressing_style": "path"}
        try:
            # The tier checksums values itself (xxh3, end to end): no CRC32 per request.
            config = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                **options,
            )
        except TypeError:  # botocore before 1.36 has neither option (nor computes CRC32)
            config = Config(**options)
        return boto3.client("s3", endpoint_url=endpoint_url, config=config)

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
        return self._capacity

    # -- naming -------------------------------------------------------------------------------
    def object_name(self, job: str, key: str) -> str:
        """The S3 key of ``key`` in ``job``."""
        return self._naming(job, key)[0]

    def _naming(self, job: str, key: str) -> tuple[str, dict[str, str]]:
        """The object name, and the metadata that must carry job or key if it is hashed."""
        if not job:
            raise InvalidKeyError("jobs must not be empty")
        if not key:
            raise InvalidKeyError("keys must not be empty")
        extra: dict[str, str] = {}
        jseg = encode_segment(job)
        if len(jseg.encode()) > SEGMENT_MAX:
            jseg = hashed(job)
            extra["job"] = b64(job)
        kseg = encode_segment(key)
        head = len(self._base.encode()) + len(jseg.encode()) + 1
        if len(kseg.encode()) > SEGMENT_MAX or head + len(kseg.encode()) > NAME_MAX:
            kseg = hashed(key)
            extra["key"] = b64(key)
        return f"{self._base}{jseg}/{kseg}", extra

    def _parse_name(self, name: str, raw: dict[str, str]) -> tuple[str, str] | None:
        """Job and key of an object name (with its metadata), or None if it is not ours."""
        if not name.startswith(self._base):
            return None
        jseg, sep, kseg = name[len(self._base) :].partition("/")
        if not sep or "/" in kseg:
            return None
        try:
            job = unb64(raw["job"]) if jseg.startswith("~") else decode_segment(jseg)
            key = unb64(raw["key"]) if kseg.startswith("~") else decode_segment(kseg)
        except (KeyError, ValueError):
            return None
        try:
            if self.object_name(job, key) != name:
                return None
        except InvalidKeyError:
            return None
        return job, key

    # -- S3 calls and their errors ------------------------------------------------------------
    def _error(self, exc: BaseException, op: str, name: str) -> PocketError:
        """The PocketError a failed S3 call stands for."""
        if isinstance(exc, PocketError):
            return exc
        from botocore import exceptions as bx

        where = f"S3 {op} s3://{self.bucket}/{name} at {self.endpoint_url or 'AWS'}"
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = f"{where}: {code} {error.get('Message', '')}".rstrip()
            if code in ("NoSuchKey", "NotFound") or (code == "404" and op != "LIST"):
                return NotFoundError(message)
            if code == "NoSuchBucket":
                return ConfigError(f"{where}: bucket {self.bucket!r} does not exist")
            if code in ("KeyTooLongError", "InvalidObjectName"):
                return InvalidKeyError(message)
            if code in _CREDENTIAL_ERRORS or status == 403:
                return ConfigError(f"{message} (check the S3 credentials)")
            if code in ("RequestTimeout", "RequestTimeTooSkewed"):
                return PocketTimeoutError(message)
            if code in ("SlowDown", "ServiceUnavailable", "Throttling") or status == 503:
                return TransportError(f"{message} (S3 is unavailable or throttling)")
            return ServerError(message)
        if isinstance(exc, bx.ConnectTimeoutError):
            return PocketTimeoutError(f"{where}: no connection within {self.timeout} s ({exc})")
        if isinstance(exc, bx.ReadTimeoutError):
            return PocketTimeoutError(f"{where}: no answer within {self.timeout} s ({exc})")
        if isinstance(exc, bx.ConnectionError):
            return ConnectError(f"{where}: cannot reach the endpoint ({exc})")
        if isinstance(exc, (bx.HTTPClientError, bx.IncompleteReadError)):
            return TransportError(f"{where}: the connection broke ({exc})")
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return ConfigError(
                f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"or AWS_PROFILE)"
            )
        if isinstance(exc, OSError):
            return TransportError(f"{where}: {exc}")
        return ServerError(f"{where}: {type(exc).__name__}: {exc}")

    def _call(self, op: str, name: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._error(exc, op, name) from exc

    # -- write path ---------------------------------------------------------------------------
    def _part_size(self, nbytes: int) -> int:
        size = max(self.multipart_threshold, MIN_PART, -(-nbytes // (MAX_PARTS - 1)))
        return min(size, MAX_PART)

    def _charge(self, nbytes: int) -> None:
        with self._lock:
            free = self._capacity - self._used
            if nbytes > free:
                raise CapacityError(
                    f"s3 tier is full: {nbytes} bytes requested, {free} of {self._capacity} free"
                )
            self._used += nbytes
            if self._used > self._peak:
                self._peak = self._used

    def _uncharge(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes

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
            self._used -= res.charged
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
                self._version += 1
                version = self._version
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
                self._publish(job, key, _Stored(meta, digest, name), charged)
        return meta

    def _upload(
        self, name: str, chunks: list[bytearray], size: int, metadata: dict[str, str]
    ) -> None:
        common = {"Key": name, "Metadata": metadata, "ContentType": "application/octet-stream"}
        if size <= self.multipart_threshold:
            body: bytes | bytearray = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._call("PUT", name, self._client.put_object, Body=body, **common)
            return
        parts = plan_parts(chunks, size)
        created = self._call("PUT", name, self._client.create_multipart_upload, **common)
        upload_id = created["UploadId"]
        futures: list[Future[str]] = []
        try:
            for number, group in enumerate(parts, 1):
                futures.append(self._pool.submit(self._upload_part, name, upload_id, number, group))
            etags = [f.result() for f in futures]
            self._call(
                "PUT", name, self._client.complete_multipart_upload, Key=name, UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"ETag": tag, "PartNumber": n} for n, tag in enumerate(etags, 1)]
                },
            )  # fmt: skip
        except BaseException:
            for f in futures:
                f.cancel()
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
            raise

    def _upload_part(self, name: str, upload_id: str, number: int, group: list[bytearray]) -> str:
        body = group[0] if len(group) == 1 else b"".join(group)
        done = self._call(
            "PUT", name, self._client.upload_part, Key=name, UploadId=upload_id,
            PartNumber=number, Body=body,
        )  # fmt: skip
        return str(done["ETag"])

    # -- read path ----------------------------------------------------------------------------
    def lease(self, job: str, key: str, *, take: bool = False) -> Lease:
        if take:
            lease = self._take(job, key, None)
            assert lease is not None
            return lease
        attempts = 4
        for attempt in range(attempts):
            with self._lock:
                stored = self._find(job, key)
                stored.refs += 1
            try:
                data, raw = self._fetch(stored.name)
                found = parse_meta(raw)
                meta, digest = stored.meta, stored.digest
                if found is not None and found[0].version != meta.version:
                    # Overwritten between the index lookup and the GET: look again, and if it
                    # keeps moving serve what was read, checked against its own metadata.
                    if attempt < attempts - 1:
                        self._release(stored)
                        time.sleep(0.005 * (attempt + 1))
                        continue
                    meta, digest = found
                self._verify(stored.name, data, meta.size, digest)
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
                stored = self._find(job, key)
                if limit is not None and stored.meta.size > limit:
                    return None
                stored.refs += 1
            try:
                data, _ = self._fetch(stored.name)
                self._verify(stored.name, data, stored.meta.size, stored.digest)
                self._delete_names([stored.name])
                with self._lock:
                    self._remove_if(job, key, stored)
            except BaseException:
                self._release(stored)
                raise
        return Lease(stored.meta, [memoryview(data).toreadonly()], self._release, stored)

    def _fetch(self, name: str) -> tuple[bytes | bytearray, dict[str, str]]:
        """The object's bytes and metadata."""
        resp = self._call("GET", name, self._client.get_object, Key=name)
        body = resp["Body"]
        try:
            length = int(resp.get("ContentLength", -1))
            data: bytes | bytearray
            if length < 0 or length <= _READ_WHOLE:
                data = body.read()
            else:
                data = bytearray(length)
                pos = 0
                while pos < length:
                    chunk = body.read(min(_READ_CHUNK, length - pos))
                    if not chunk:
                        raise TransportError(
                            f"S3 GET s3://{self.bucket}/{name}: the body ended at {pos} of "
                            f"{length} bytes"
                        )
                    data[pos : pos + len(chunk)] = chunk
                    pos += len(chunk)
        except Exception as exc:
            raise self._error(exc, "GET", name) from exc
        finally:
            body.close()
        return data, dict(resp.get("Metadata") or {})

    def _verify(self, name: str, data: bytes | bytearray, size: int, digest: int) -> None:
        if len(data) != size:
            raise ChecksumError(
                f"s3://{self.bucket}/{name} holds {len(data)} bytes, {size} were stored"
            )
        if xxh3(data) != digest:
            raise ChecksumError(
                f"s3://{self.bucket}/{name} does not match the checksum it was stored with"
            )

    def stat(self, job: str, key: str) -> ObjectMeta:
        with self._lock:
            return self._find(job, key).meta

    # -- deletes ------------------------------------------------------------------------------
    def delete(self, job: str, key: str) -> bool:
        with self._key_locked([(job, key)]):
            with self._lock:
                index = self._jobs.get(job)
                stored = index.objects.get(key) if index else None
            if stored is None:
                return False
            self._delete_names([stored.name])
            with self._lock:
                self._remove_if(job, key, stored)
            return True

    def delete_prefix(self, job: str, prefix: str) -> int:
        with self._lock:
            index = self._jobs.get(job)
            keys = [k for k in index.objects if k.startswith(prefix)] if index else []
        return self._delete_many(job, keys, None)

    def delete_job(self, job: str) -> int:
        with self._lock:
            index = self._jobs.get(job)
            keys = list(index.objects) if index else []
        count = self._delete_many(job, keys, None)
        with self._lock:
            index = self._jobs.get(job)
            if index is not None and not index.objects:
                del self._jobs[job]
        return count

    def expire(self, now: float) -> int:
        due: dict[str, dict[str, int]] = {}
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, version, job, key = heapq.heappop(self._expiry)
                index = self._jobs.get(job)
                stored = index.objects.get(key) if index else None
                if stored is not None and stored.meta.version == version:
                    due.setdefault(job, {})[key] = version
        count = 0
        for job, versions in due.items():
            try:
                count += self._delete_many(job, sorted(versions), versions)
            except BaseException:
                with self._lock:  # not deleted: due again next time
                    for key, version in versions.items():
                        heapq.heappush(self._expiry, (now, version, job, key))
                raise
        return count

    def _delete_many(self, job: str, keys: list[str], versions: dict[str, int] | None) -> int:
        """Delete ``keys`` of ``job`` (only at these versions, if given); returns the count."""
        count = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with self._key_locked([(job, k) for k in batch]):
                with self._lock:
                    index = self._jobs.get(job)
                    doomed: list[tuple[str, _Stored]] = []
                    for key in batch:
                        stored = index.objects.get(key) if index else None
                        if stored is None:
                            continue
                        if versions is not None and stored.meta.version != versions[key]:
                            continue
                        doomed.append((key, stored))
                if not doomed:
                    continue
                failed = self._delete_names([s.name for _, s in doomed], strict=False)
                with self._lock:
                    for key, stored in doomed:
                        if stored.name not in failed:
                            self._remove_if(job, key, stored)
                            count += 1
                if failed:
                    name, why = next(iter(failed.items()))
                    raise ServerError(
                        f"S3 DELETE s3://{self.bucket}/{name}: {why} "
                        f"({len(failed)} objects not deleted)"
                    )
        return count

    def _delete_names(self, names: list[str], *, strict: bool = True) -> dict[str, str]:
        """Delete objects; the ones S3 refused to delete, with why (raised if ``strict``)."""
        if len(names) == 1:
            with contextlib.suppress(NotFoundError):
                self._call("DELETE", names[0], self._client.delete_object, Key=names[0])
            return {}
        resp = self._call(
            "DELETE", names[0], self._client.delete_objects,
            Delete={"Objects": [{"Key": n} for n in names], "Quiet": True},
        )  # fmt: skip
        failed = {
            str(e.get("Key")): f"{e.get('Code', '')} {e.get('Message', '')}".strip()
            for e in resp.get("Errors") or ()
            if e.get("Code") != "NoSuchKey"
        }
        if failed and strict:
            name, why = next(iter(failed.items()))
            raise ServerError(f"S3 DELETE s3://{self.bucket}/{name}: {why}")
        return failed

    # -- listing and accounting ---------------------------------------------------------------
    def list(
        self, job: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], bool]:
        from bisect import bisect_left, bisect_right

        now = time.time()
        with self._lock:
            index = self._jobs.get(job)
            if index is None:
                return [], False
            if index.sorted_keys is None:
                index.sorted_keys = sorted(index.objects)
            keys = index.sorted_keys
            i = bisect_right(keys, after) if after >= prefix else bisect_left(keys, prefix)
            out: list[str] = []
            while i < len(keys) and keys[i].startswith(prefix):
                stored = index.objects.get(keys[i])
                if stored is not None and not (stored.meta.expires and stored.meta.expires <= now):
                    if len(out) == limit:
                        return out, True
                    out.append(keys[i])
                i += 1
            return out, False

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                tier=self.name,
                capacity=self._capacity,
                used=self._used,
                peak_used=self._peak,
                objects=self._objects,
                used_by_job={j: ix.used for j, ix in self._jobs.items() if ix.objects},
                objects_by_job={j: len(ix.objects) for j, ix in self._jobs.items() if ix.objects},
            )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_client:
            close = getattr(self._client, "close", None)  # botocore 1.29+: its connection pool
            if close is not None:
                close()

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the index from what is stored under the prefix."""
        where = self._base or "/"
        self._abort_stale_uploads()
        names: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base):
                names.extend(str(obj["Key"]) for obj in page.get("Contents") or ())
        except Exception as exc:
            raise self._error(exc, "LIST", where) from exc
        if not names:
            return
        # One HEAD per object for its metadata, many at a time (the client pools 32 connections).
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="pocket-s3-recover") as pool:
            heads = list(pool.map(self._head, names))
        for name, raw in zip(names, heads, strict=True):
            if raw is None:  # deleted since the listing
                continue
            parsed = parse_meta(raw)
            ids = self._parse_name(name, raw) if parsed is not None else None
            if parsed is None or ids is None:
                self.skipped.append(name)
                continue
            (meta, digest), (job, key) = parsed, ids
            with self._lock:
                index = self._jobs.get(job)
                old = index.objects.get(key) if index else None
                if old is not None and old.meta.version >= meta.version:
                    continue
                self._version = max(self._version, meta.version)
                self._used += meta.size
                self._publish(job, key, _Stored(meta, digest, name), meta.size)
        self._peak = self._used
        if self.skipped:
            log.warning(
                "s3 tier: %d objects under s3://%s/%s are not the tier's own; left alone",
                len(self.skipped), self.bucket, self._base,
            )  # fmt: skip
        if self._used > self._capacity:
            log.warning(
                "s3 tier: s3://%s/%s holds %d bytes, over the capacity %d; puts are refused "
                "until enough is deleted",
                self.bucket, self._base, self._used, self._capacity,
            )  # fmt: skip

    def _head(self, name: str) -> dict[str, str] | None:
        try:
            resp = self._call("HEAD", name, self._client.head_object, Key=name)
        except NotFoundError:
            return None
        return dict(resp.get("Metadata") or {})

    def _abort_stale_uploads(self) -> None:
        """Abort multipart uploads left behind by a node that died mid-commit."""
        try:
            resp = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._base)
        except Exception as exc:
            err = self._error(exc, "LIST", self._base or "/")
            if isinstance(err, (TransportError, ConfigError)):
                raise err from exc
            return  # not supported by this store: nothing to clean
        for upload in resp.get("Uploads") or ():
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )

    # -- internals ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _key_locked(self, pairs: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Hold the locks of these keys (taken in sorted order: no deadlock between holders)."""
        wanted: list[tuple[str, str]] = sorted(set(pairs))
        with self._lock:
            entries = []
            for pair in wanted:
                entry = self._key_locks.get(pair)
                if entry is None:
                    entry = self._key_locks[pair] = _KeyLock()
                entry.users += 1
                entries.append(entry)
        held = 0
        try:
            for entry in entries:
                entry.lock.acquire()
                held += 1
            yield
        finally:
            for entry in entries[:held]:
                entry.lock.release()
            with self._lock:
                for pair, entry in zip(wanted, entries, strict=True):
                    entry.users -= 1
                    if entry.users == 0:
                        del self._key_locks[pair]

    def _find(self, job: str, key: str) -> _Stored:
        """The live object (lock held); NotFoundError if absent or expired."""
        index = self._jobs.get(job)
        stored = index.objects.get(key) if index else None
        if stored is None:
            raise NotFoundError(f"no object {key!r} in job {job!r}")
        if stored.meta.expires and stored.meta.expires <= time.time():
            raise NotFoundError(f"object {key!r} in job {job!r} expired")
        return stored

    def _publish(self, job: str, key: str, stored: _Stored, charged: int) -> None:
        """Make ``stored`` the object of ``key`` (lock held; its charge is already counted)."""
        index = self._jobs.get(job)
        if index is None:
            index = self._jobs[job] = _JobIndex()
        old = index.objects.get(key)
        if old is None:
            index.sorted_keys = None
        else:
            self._unlink(index, old)
        self._objects += 1
        index.objects[key] = stored
        index.used += charged
        if stored.meta.expires:
            heapq.heappush(self._expiry, (stored.meta.expires, stored.meta.version, job, key))

    def _remove_if(self, job: str, key: str, stored: _Stored) -> None:
        """Unlink ``key`` if it is still ``stored`` (lock held)."""
        index = self._jobs.get(job)
        if index is not None and index.objects.get(key) is stored:
            del index.objects[key]
            index.sorted_keys = None
            self._unlink(index, stored)

    def _unlink(self, index: _JobIndex, stored: _Stored) -> None:
        index.used -= stored.meta.size
        self._objects -= 1
        stored.dead = True
        if stored.refs == 0:
            self._used -= stored.meta.size

    def _release(self, stored: _Stored) -> None:
        with self._lock:
            stored.refs -= 1
            if stored.dead and stored.refs == 0:
                self._used -= stored.meta.size
