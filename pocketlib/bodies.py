"""The structured bodies of frames, sans-IO: key lists, MULTI entries, extents, JSON, and the
fixed layouts of STAT, detailed LIST and GET_RANGES answers (:mod:`pocketlib.protocol` has the
headers they follow; docs/protocol.md the whole format)."""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from .config import MAX_KEY_BYTES
from .errors import InvalidKeyError, PocketError, ProtocolError, status_for_error
from .protocol import Buffer

__all__ = [
    "ENTRY",
    "EntryWriter",
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
    "error_entry",
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


class Entry(NamedTuple):
    """One item of a MULTI-PUT request or a MULTI-GET / MULTI-PUT response (a tuple: a
    batch decodes one per key)."""

    key: bytes
    value: Buffer
    status: int = 0
    flags: int = 0
    checksum: int = 0


# tuple.__new__ straight from C: a NamedTuple's own __new__ is a Python function.
_make_entry = functools.partial(tuple.__new__, Entry)


def encode_keys(keys: Sequence[bytes]) -> bytes:
    """A list of keys (LIST response, MULTI-GET request)."""
    return b"".join(_KEY_LEN.pack(len(k)) + k for k in keys)


def decode_keys(body: bytes | memoryview) -> list[bytes]:
    """Inverse of :func:`encode_keys`."""
    data = bytes(body)  # (slices of bytes are the keys, with no view in between)
    keys: list[bytes] = []
    append = keys.append
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            raise ProtocolError("truncated key list")
        n = data[pos] | data[pos + 1] << 8  # (_KEY_LEN, unpacked by hand: twice as fast)
        pos += 2
        if n > MAX_KEY_BYTES or pos + n > end:
            raise ProtocolError("bad key length in key list")
        append(data[pos : pos + n])
        pos += n
    return keys


#: Values up to this size are copied into the buffer of a MULTI body's headers; larger ones
#: are left as buffers of their own, sent without a copy (a gathered write of a thousand tiny
#: buffers costs more than copying them once).
_JOIN_VALUE = 4 * 1024


def error_entry(key: bytes, exc: Exception) -> Entry:
    """The entry that answers ``key`` with ``exc`` (a key that is not UTF-8: invalid)."""
    pe = exc if isinstance(exc, PocketError) else InvalidKeyError(str(exc))
    return Entry(key, str(pe).encode("utf-8", "replace"), status_for_error(pe))


_pack_entry = ENTRY.pack


class EntryWriter:
    """A MULTI body being built, entry by entry: headers, keys and small values joined into
    one buffer, large values left apart so they are sent without a copy."""

    __slots__ = ("_buf", "_parts")

    def __init__(self) -> None:
        self._parts: list[Buffer] = []
        self._buf = bytearray()

    def add(self, key: bytes, value: Buffer, status: int = 0, flags: int = 0,
            checksum: int = 0) -> None:  # fmt: skip
        """One entry: a value (or an error message, with ``status``)."""
        n = len(value)
        buf = self._buf
        buf += _pack_entry(len(key), status, flags, 0, n, checksum)
        buf += key
        if n <= _JOIN_VALUE:
            buf += value
        else:
            self._parts += (buf, value)
            self._buf = bytearray()

    def add_error(self, key: bytes, exc: Exception) -> None:
        """An entry that carries the error for ``key``."""
        e = error_entry(key, exc)
        self.add(e.key, e.value, e.status)

    def finish(self) -> list[Buffer]:
        """The body's buffers, in order."""
        if self._buf:
            self._parts.append(self._buf)
            self._buf = bytearray()
        return self._parts


def encode_entries(entries: Sequence[Entry]) -> list[Buffer]:
    """Buffers of a MULTI body: headers, keys and small values joined, large values apart."""
    out = EntryWriter()
    for e in entries:
        out.add(e.key, e.value, e.status, e.flags, e.checksum)
    return out.finish()


def decode_entries(body: bytes | memoryview) -> list[Entry]:
    """Inverse of :func:`encode_entries`. Keys and small values are bytes sliced from the
    body; larger values are zero-copy views of it."""
    data = body if type(body) is bytes else bytes(body)
    view = memoryview(data)
    out: list[Entry] = []
    append = out.append
    unpack = ENTRY.unpack_from
    head = ENTRY.size
    pos, end = 0, len(data)
    while pos < end:
        if pos + head > end:
            raise ProtocolError("truncated entry header")
        key_len, status, flags, _, length, value_checksum = unpack(data, pos)
        pos += head
        start = pos + key_len
        if key_len > MAX_KEY_BYTES or start + length > end:
            raise ProtocolError("entry runs past the end of its frame")
        stop = start + length
        value = data[start:stop] if length <= _JOIN_VALUE else view[start:stop]
        append(_make_entry((data[pos:start], value, status, flags, value_checksum)))
        pos = stop
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
