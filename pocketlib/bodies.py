"""The structured bodies of frames, sans-IO: key lists, MULTI entries, extents, JSON, and the
fixed layouts of STAT, detailed LIST and GET_RANGES answers (:mod:`pocketlib.protocol` has the
headers they follow; docs/protocol.md the whole format)."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import MAX_KEY_BYTES
from .errors import ProtocolError
from .protocol import Buffer

__all__ = [
    "ENTRY",
    "LIST_INFO",
    "MAX_RANGES",
    "MAX_RANGES_BYTES",
    "RANGE_ENTRY",
    "STAT_BODY",
    "Entry",
    "decode_entries",
    "decode_extents",
    "decode_json",
    "decode_keys",
    "encode_entries",
    "encode_extents",
    "encode_json",
    "encode_keys",
]

# key_len, status, flags, reserved, length, checksum: one item of a MULTI-PUT / MULTI-GET body
ENTRY = struct.Struct("<HHHHQQ")
_KEY_LEN = struct.Struct("<H")
#: STAT response body: created and expiry times (seconds since the epoch; 0 = no expiry).
#: STAT's answer: created, expires (0: none), and the value's own length (a compressed value's
#: length once decompressed; a striped value's manifest: 0, the client reads it).
STAT_BODY = struct.Struct("<ddQ")
#: What a LIST with Flag.DETAIL tells of each key: size, version, then STAT_BODY's fields.
LIST_INFO = struct.Struct("<QQddQ")
#: One byte range of a GET_RANGES request: offset, length.
RANGE_ENTRY = struct.Struct("<QQ")
#: Most ranges one GET_RANGES request may ask for, and most bytes its answer may carry.
MAX_RANGES = 65_536
MAX_RANGES_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class Entry:
    """One item of a MULTI-PUT request or a MULTI-GET / MULTI-PUT response."""

    key: bytes
    value: Buffer
    status: int = 0
    flags: int = 0
    checksum: int = 0


def encode_keys(keys: Sequence[bytes]) -> bytes:
    """A list of keys (LIST response, MULTI-GET request)."""
    return b"".join(_KEY_LEN.pack(len(k)) + k for k in keys)


def decode_keys(body: bytes | memoryview) -> list[bytes]:
    """Inverse of :func:`encode_keys`."""
    view = memoryview(body)
    keys: list[bytes] = []
    pos = 0
    while pos < len(view):
        if pos + 2 > len(view):
            raise ProtocolError("truncated key list")
        (n,) = _KEY_LEN.unpack_from(view, pos)
        pos += 2
        if n > MAX_KEY_BYTES or pos + n > len(view):
            raise ProtocolError("bad key length in key list")
        keys.append(bytes(view[pos : pos + n]))
        pos += n
    return keys


def encode_entries(entries: Sequence[Entry]) -> list[Buffer]:
    """Buffers of a MULTI body, values left unjoined so they can be sent without a copy."""
    parts: list[Buffer] = []
    for e in entries:
        parts.append(ENTRY.pack(len(e.key), e.status, e.flags, 0, len(e.value), e.checksum) + e.key)
        if len(e.value):
            parts.append(e.value)
    return parts


def decode_entries(body: bytes | memoryview) -> list[Entry]:
    """Inverse of :func:`encode_entries`; values are zero-copy slices of ``body``."""
    view = memoryview(body)
    out: list[Entry] = []
    pos = 0
    end = len(view)
    while pos < end:
        if pos + ENTRY.size > end:
            raise ProtocolError("truncated entry header")
        key_len, status, flags, _, length, value_checksum = ENTRY.unpack_from(view, pos)
        pos += ENTRY.size
        if key_len > MAX_KEY_BYTES or pos + key_len + length > end:
            raise ProtocolError("entry runs past the end of its frame")
        key = bytes(view[pos : pos + key_len])
        pos += key_len
        out.append(Entry(key, view[pos : pos + length], status, flags, value_checksum))
        pos += length
    return out


_EXTENT = struct.Struct("<QQ")


def encode_extents(extents: Sequence[tuple[int, int]]) -> bytes:
    """``(offset, length)`` pairs in a shared mapping (SHM_GET and SHM_RESERVE responses)."""
    return b"".join(_EXTENT.pack(o, n) for o, n in extents)


def decode_extents(body: bytes | memoryview) -> list[tuple[int, int]]:
    """Inverse of :func:`encode_extents`."""
    if len(body) % _EXTENT.size:
        raise ProtocolError("truncated extent list")
    return [_EXTENT.unpack_from(body, i) for i in range(0, len(body), _EXTENT.size)]


def encode_json(obj: Any) -> bytes:
    """A JSON body (STATS)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode_json(body: bytes | memoryview) -> dict[str, Any]:
    """Inverse of :func:`encode_json`."""
    try:
        result = json.loads(bytes(body))
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON body: {exc}") from exc
    if not isinstance(result, dict):
        raise ProtocolError("JSON body is not an object")
    return result
