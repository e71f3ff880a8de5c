"""The HDD tier's files (see :mod:`pocketlib.tiers.hdd` for the directory layout).

An object file is a 4 KiB header, then the value. The header carries the job, key, size,
checksums, flags, version, created and expires, and a checksum of the header itself, so the
directory is the index: :func:`scan_objects` checks every file at start and returns what is to
be indexed. Also here: file naming, charging, the version ceiling file and small I/O helpers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as stat_mod
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

from ..errors import CapacityError, ConfigError, InvalidKeyError, PocketError, ServerError
from ..protocol import checksum as value_checksum

__all__ = ["HEADER_SIZE", "Damaged", "Header", "charge", "pack_header", "parse_header",
           "scan_objects"]  # fmt: skip

#: Bytes before the value in an object file: the value starts on a page boundary, so it can be
#: mapped on its own, and copy_file_range can clone block-aligned ranges where the file system
#: supports it.
HEADER_SIZE = 4096
#: Values are charged in whole blocks, so that ``capacity`` bounds the disk space used.
BLOCK = 4096
FORMAT_VERSION = 1
_MAGIC = b"POCKETHD"
# magic, header checksum, format version, reserved, job length, key length, size, checksum (as
# given), data checksum (computed by the tier), flags, version, created, expires; then the job
# and key bytes. The header checksum covers everything after itself.
_FIXED = struct.Struct("<8sQHHHHQQQQQdd")
_MAX_NAMES = HEADER_SIZE - _FIXED.size
_ZEROS = bytes(HEADER_SIZE)


class Header(NamedTuple):
    job: str
    key: str
    size: int
    checksum: int
    data_checksum: int
    flags: int
    version: int
    created: float
    expires: float


class Damaged(Exception):
    """A file in objects/ that must not be served (the message says why)."""


def pack_header(
    job: bytes, key: bytes, size: int, checksum: int, data_checksum: int, flags: int,
    version: int, created: float, expires: float,
) -> bytes:  # fmt: skip
    fixed = _FIXED.pack(
        _MAGIC, 0, FORMAT_VERSION, 0, len(job), len(key), size, checksum, data_checksum, flags,
        version, created, expires,
    )  # fmt: skip
    body = fixed[16:] + job + key
    head = _MAGIC + value_checksum(body).to_bytes(8, "little") + body
    return head + _ZEROS[len(head) :]


def parse_header(raw: bytes) -> Header:
    """The header at the start of an object file; Damaged if it is not a valid one."""
    if len(raw) < _FIXED.size:
        raise Damaged(f"file of {len(raw)} bytes is shorter than a header")
    (magic, header_checksum, fmt, _, job_len, key_len, size, checksum, data_checksum, flags,
     version, created, expires) = _FIXED.unpack_from(raw)  # fmt: skip
    if magic != _MAGIC:
        raise Damaged("not an object file (bad magic)")
    if fmt > FORMAT_VERSION:
        raise ConfigError(
            f"an object file has format version {fmt}; this pocketlib reads up to "
            f"{FORMAT_VERSION}: it was written by a newer one"
        )
    end = _FIXED.size + job_len + key_len
    if end > len(raw) or end > HEADER_SIZE:
        raise Damaged("header names are longer than the header")
    if value_checksum(raw[16:end]) != header_checksum:
        raise Damaged("header checksum mismatch")
    try:
        job = raw[_FIXED.size : _FIXED.size + job_len].decode()
        key = raw[_FIXED.size + job_len : end].decode()
    except UnicodeDecodeError:
        raise Damaged("job or key is not UTF-8") from None
    return Header(job, key, size, checksum, data_checksum, flags, version, created, expires)


def name_for(job: str, key: str) -> str:
    """The file name an object of ``job`` and ``key`` is stored under (before collisions)."""
    raw_job = job.encode()
    digest = hashlib.blake2b(len(raw_job).to_bytes(2, "little") + raw_job, digest_size=16)
    digest.update(key.encode())
    return digest.hexdigest()


def charge(nbytes: int) -> int:
    return HEADER_SIZE + -(-nbytes // BLOCK) * BLOCK


def os_failure(exc: OSError, what: str) -> PocketError:
    """The error a node reports for an OSError of the medium."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CapacityError(f"hdd tier: the disk is full ({what})")
    return ServerError(f"hdd tier: {what}: {exc.strerror or exc}")


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) < size:  # a regular file gives all of it in one call unless it is short
        data += os.pread(fd, size - len(data), offset + len(data))
    return data


def header_names(job: str, key: str) -> tuple[bytes, bytes]:
    """Job and key as stored in a header; InvalidKeyError if they do not fit in one."""
    raw_job, raw_key = job.encode(), key.encode()
    if len(raw_job) + len(raw_key) > _MAX_NAMES:
        raise InvalidKeyError(
            f"job and key are {len(raw_job) + len(raw_key)} bytes; the hdd tier stores at "
            f"most {_MAX_NAMES}"
        )
    return raw_job, raw_key


def check_file(path: str, verify_max: int) -> Header:
    """The header of the object file at ``path``, its length checked and (up to
    ``verify_max`` bytes) its value hashed; Damaged if it must not be served."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise Damaged(f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise Damaged("not a regular file")
        header = parse_header(os.pread(fd, HEADER_SIZE, 0))
        if st.st_size != HEADER_SIZE + header.size:
            raise Damaged(
                f"file is {st.st_size} bytes, its header says {HEADER_SIZE + header.size}"
            )
        if header.size <= verify_max:
            data = pread_all(fd, header.size, HEADER_SIZE)
            if value_checksum(data) != header.data_checksum:
                raise Damaged("value does not match its checksum")
        return header
    finally:
        os.close(fd)


class Scan(NamedTuple):
    """What :func:`scan_objects` found."""

    #: The objects to index, oldest version first, each with its file name.
    found: list[tuple[Header, str]]
    #: The highest version of any file seen (expired ones included).
    version: int
    #: Files moved aside as damaged.
    dropped: int


def scan_objects(objects_dir: str, verify_max: int, move_aside: Callable[[str, str], None]) -> Scan:
    """Check every file in ``objects_dir``: a damaged one is handed to ``move_aside(name,
    reason)``, an expired one removed, and of two files for one key (a delete lost to power
    loss) the older removed."""
    now = time.time()
    version = dropped = 0
    found: dict[tuple[str, str], tuple[Header, str]] = {}
    for entry in os.scandir(objects_dir):
        try:
            header = check_file(entry.path, verify_max)
        except Damaged as exc:
            move_aside(entry.name, str(exc))
            dropped += 1
            continue
        version = max(version, header.version)
        if header.expires and header.expires <= now:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            continue
        ident = (header.job, header.key)
        other = found.get(ident)
        if other is not None:
            # Two files for one key (a delete lost to power loss): the newer one wins.
            if other[0].version > header.version:
                os.unlink(entry.path)
                continue
            os.unlink(os.path.join(objects_dir, other[1]))
        found[ident] = (header, entry.name)
    ordered = sorted(found.values(), key=lambda item: item[0].version)
    return Scan(ordered, version, dropped)


def remove_temps(tmp_dir: str) -> int:
    """Remove what a crash left in ``tmp_dir``; returns how many files."""
    count = 0
    for entry in os.scandir(tmp_dir):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        count += 1
    return count


def read_version(path: str) -> int:
    """The version ceiling stored at ``path`` (0 if there is none)."""
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or b"0")
    except FileNotFoundError:
        return 0
    except ValueError:
        return 0


def write_version(path: str, ceiling: int) -> None:
    """Store a version ceiling at ``path``, durably (file and directory synced)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"%d\n" % ceiling)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
