"""Object names and metadata of the S3 tier (see :mod:`pocketlib.tiers.s3` for the layout).

Job and key are each escaped into one path segment, per character, so a key prefix stays an
object-name prefix; names too long for path-based stores are hashed. Multipart uploads are
planned here too: which chunks go into which part.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse

from .base import ObjectMeta

__all__ = ["decode_segment", "encode_segment", "parse_meta", "plan_parts"]

MiB = 1 << 20
#: S3's smallest part (all but the last) and most parts in one multipart upload.
MIN_PART = 5 * MiB
MAX_PARTS = 10_000

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
