"""Object names and metadata of the S3 tier.

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

Multipart uploads are planned here too: which chunks go into which part.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse

from ..errors import InvalidKeyError
from .base import ObjectMeta

__all__ = [
    "decode_segment",
    "encode_segment",
    "object_naming",
    "parse_meta",
    "parse_name",
    "plan_parts",
]

MiB = 1 << 20
#: S3's smallest part (all but the last) and most parts in one multipart upload.
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
#: Longest path segment that path-based stores (SeaweedFS, MinIO) accept, and S3's longest key.
SEGMENT_MAX = 255
NAME_MAX = 1024

_UNSAFE = re.compile("[\x00-\x1f\x7f%/\\\\~\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode())


def encode_segment(text: str) -> str:
    """``text`` as one path segment of an object name (see the module docs)."""
    out = _UNSAFE.sub(_escape, text)
    if out.startswith("."):
        out = "%2E" + out[1:]
    return out


def decode_segment(segment: str) -> str:
    """The text :func:`encode_segment` made ``segment`` from (ValueError if it did not)."""
    text = urllib.parse.unquote(segment, errors="strict")
    if encode_segment(text) != segment:
        raise ValueError(f"{segment!r} is not an escaped segment")
    return text


def hashed(text: str) -> str:
    return "~" + hashlib.sha256(text.encode()).hexdigest()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode("ascii")


def unb64(value: str) -> str:
    return base64.urlsafe_b64decode(value.encode("ascii")).decode()


def parse_meta(raw: dict[str, str]) -> tuple[ObjectMeta, int] | None:
    """The metadata the tier wrote on an object, or None if it is not one of ours."""
    try:
        meta = ObjectMeta(
            int(raw["size"]),
            int(raw["checksum"]),
            int(raw["flags"]),
            int(raw["version"]),
            float(raw["created"]),
            float(raw["expires"]),
        )
        return meta, int(raw["xxh3"])
    except (KeyError, ValueError):
        return None


def plan_parts(chunks: list[bytearray], total: int) -> list[list[bytearray]]:
    """Group chunks into multipart parts: each part at least the S3 minimum (but the last),
    and few enough parts for S3's limit. A chunk big enough is a part of its own."""
    floor = max(MIN_PART, -(-total // (MAX_PARTS - 1)))
    parts: list[list[bytearray]] = []
    pending: list[bytearray] = []
    pending_len = 0
    for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        pending_len += len(chunk)
        if pending_len >= floor:
            parts.append(pending)
            pending, pending_len = [], 0
    if pending:
        parts.append(pending)
    return parts


def object_naming(base: str, job: str, key: str) -> tuple[str, dict[str, str]]:
    """The object name under ``base``, and the metadata that must carry job or key if it is
    hashed."""
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
    head = len(base.encode()) + len(jseg.encode()) + 1
    if len(kseg.encode()) > SEGMENT_MAX or head + len(kseg.encode()) > NAME_MAX:
        kseg = hashed(key)
        extra["key"] = b64(key)
    return f"{base}{jseg}/{kseg}", extra


def parse_name(base: str, name: str, raw: dict[str, str]) -> tuple[str, str] | None:
    """Job and key of an object name (with its metadata), or None if it is not ours."""
    if not name.startswith(base):
        return None
    jseg, sep, kseg = name[len(base) :].partition("/")
    if not sep or "/" in kseg:
        return None
    try:
        job = unb64(raw["job"]) if jseg.startswith("~") else decode_segment(jseg)
        key = unb64(raw["key"]) if kseg.startswith("~") else decode_segment(kseg)
    except (KeyError, ValueError):
        return None
    try:
        if object_naming(base, job, key)[0] != name:
            return None
    except InvalidKeyError:
        return None
    return job, key
