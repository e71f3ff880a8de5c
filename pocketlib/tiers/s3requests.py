"""Requests of the S3 tier (see :mod:`pocketlib.tiers.s3`): the boto3 client, what its errors
mean, uploads (one PUT, or a multipart upload with parts sent in parallel), verified reads,
deletes, and the listing a tier is recovered from.

Errors: a missing object is NotFoundError; an endpoint that cannot be reached is ConnectError,
one that does not answer in ``timeout`` seconds PocketTimeoutError (both TransportError); an
unknown bucket or refused credentials ConfigError; anything else S3 answers ServerError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import (
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
from ..protocol import checksum as xxh3
from .s3names import plan_parts

__all__ = ["S3Requests"]

MiB = 1 << 20
#: Objects up to this size are read with one call; larger ones into one preallocated buffer.
_READ_WHOLE = 4 * MiB
_READ_CHUNK = 1 * MiB

#: S3 error codes that mean the credentials are wrong (a configuration problem).
_CREDENTIAL_ERRORS = frozenset(
    ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")
)


class S3Requests:
    """The S3 side of :class:`~pocketlib.tiers.s3.S3Tier`: calls on ``bucket`` through
    ``_client``, their errors mapped to PocketErrors."""

    bucket: str
    endpoint_url: str | None
    timeout: float
    multipart_threshold: int
    _base: str
    _client: Any
    _pool: ThreadPoolExecutor

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

    def _scan(self) -> list[tuple[str, dict[str, str]]]:
        """Every object under the prefix with its metadata (stale multipart uploads aborted
        first)."""
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
            return []
        # One HEAD per object for its metadata, many at a time (the client pools 32 connections).
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="pocket-s3-recover") as pool:
            heads = list(pool.map(self._head, names))
        # None: deleted since the listing.
        return [(n, raw) for n, raw in zip(names, heads, strict=True) if raw is not None]
