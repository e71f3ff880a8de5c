"""An append-only metadata journal: what a persistent mapped tier holds, replayed at start.

Each record is ``u32 payload length | u64 checksum of the payload | payload``. A PUT payload
names a job, a key, the object's extents in the data file and its metadata; a DEL payload a
job, a key and the version it removes. Replay applies records in order and stops at the first
record that is truncated or fails its checksum: a crash can only tear the tail, and what
follows a torn record was never acknowledged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigError
from ..protocol import checksum

__all__ = ["Journal", "JournalPut", "replay"]

_FRAME = struct.Struct("<IQ")
_PUT = struct.Struct("<BQQQQddHHI")  # kind, version, size, checksum, flags, created, expires,
#                                      job length, key length, extent count
_DEL = struct.Struct("<BQHH")  # kind, version, job length, key length
_EXTENT = struct.Struct("<QQ")
_KIND_PUT, _KIND_DEL = 1, 2
#: The header every journal file starts with (format name and version).
MAGIC = b"pocket-journal-1\n"


@dataclass(slots=True)
class JournalPut:
    """A live object as the journal describes it."""

    job: str
    key: str
    version: int
    size: int
    checksum: int
    flags: int
    created: float
    expires: float
    extents: list[tuple[int, int]]

    def encode(self) -> bytes:
        """The record's payload."""
        job, key = self.job.encode(), self.key.encode()
        head = _PUT.pack(
            _KIND_PUT, self.version, self.size, self.checksum, self.flags, self.created,
            self.expires, len(job), len(key), len(self.extents),
        )  # fmt: skip
        return head + job + key + b"".join(_EXTENT.pack(s, n) for s, n in self.extents)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), checksum(payload)) + payload


def encode_delete(job: str, key: str, version: int) -> bytes:
    """A framed DEL record."""
    j, k = job.encode(), key.encode()
    return _frame(_DEL.pack(_KIND_DEL, version, len(j), len(k)) + j + k)


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(end offset, payload)`` of each whole, intact record after the magic."""
    pos = len(MAGIC)
    while pos + _FRAME.size <= len(data):
        length, digest = _FRAME.unpack_from(data, pos)
        start, end = pos + _FRAME.size, pos + _FRAME.size + length
        if end > len(data) or checksum(data[start:end]) != digest:
            return  # a torn tail: nothing after it was acknowledged
        yield end, data[start:end]
        pos = end


def replay(data: bytes) -> tuple[dict[tuple[str, str], JournalPut], int, int]:
    """Live objects after applying every intact record; the offset where intact records end;
    and how many records there were."""
    live: dict[tuple[str, str], JournalPut] = {}
    end = len(MAGIC)
    count = 0
    for record_end, payload in _records(data):
        end = record_end
        count += 1
        kind = payload[0]
        if kind == _KIND_PUT:
            f = _PUT.unpack_from(payload)
            _, version, size, digest, flags, created, expires, jl, kl, n = f
            pos = _PUT.size
            job = payload[pos : pos + jl].decode()
            key = payload[pos + jl : pos + jl + kl].decode()
            pos += jl + kl
            extents = [_EXTENT.unpack_from(payload, pos + i * _EXTENT.size) for i in range(n)]
            live[(job, key)] = JournalPut(
                job, key, version, size, digest, flags, created, expires, extents
            )
        elif kind == _KIND_DEL:
            _, version, jl, kl = _DEL.unpack_from(payload)
            pos = _DEL.size
            job = payload[pos : pos + jl].decode()
            key = payload[pos + jl : pos + jl + kl].decode()
            current = live.get((job, key))
            if current is not None and current.version == version:
                del live[(job, key)]
    return live, end, count


class Journal:
    """The journal file of one tier directory; appends are single ``write`` calls."""

    def __init__(self, path: str, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.records = 0
        exists = os.path.exists(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if not exists or os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)

    def load(self) -> dict[tuple[str, str], JournalPut]:
        """Replay the file; a torn tail is cut off so new records follow intact ones."""
        with open(self.path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            raise ConfigError(f"{self.path} is not a pocket journal")
        live, end, self.records = replay(data)
        if end < len(data):
            os.ftruncate(self._fd, end)
        return live

    def append(self, record: bytes) -> None:
        """Append one framed record (it is in the page cache when this returns)."""
        os.write(self._fd, record)
        self.records += 1
        if self.sync:
            os.fdatasync(self._fd)

    def append_put(self, put: JournalPut) -> None:
        """Record that ``put`` is now live."""
        self.append(_frame(put.encode()))

    def append_delete(self, job: str, key: str, version: int) -> None:
        """Record that ``key``'s object ``version`` is gone."""
        self.append(encode_delete(job, key, version))

    def rewrite(self, live: list[JournalPut]) -> None:
        """Replace the file with one PUT record per live object (atomically, by rename)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC + b"".join(_frame(p.encode()) for p in live))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.records = len(live)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)
