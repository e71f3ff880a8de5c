"""Payloads by reference: a large value travels as a small marker naming where it is stored.

Lambda caps a synchronous invoke's payload at 6 MB each way and an asynchronous one's at
1 MB. :func:`offload` stores a value above a threshold in the job and returns a JSON-able
marker; :func:`resolve` walks dicts and lists and puts the values back, checking each against
the checksum its marker carries, and frees it as it reads it (the claim-check pattern, with
the job bounding every value's lifetime).
"""

from __future__ import annotations

import json
import pickle
import secrets
from typing import TYPE_CHECKING, Any

from ..errors import ChecksumError, ConfigError
from ..protocol import checksum
from .context import Invocation, payload_limit

if TYPE_CHECKING:
    from ..client.job import Job

__all__ = ["REF_KEY", "is_ref", "offload", "resolve"]

#: The one key of a marker dict.
REF_KEY = "__pocket_ref__"
#: Room left for the rest of a payload when the threshold is the invocation's limit.
_HEADROOM = 64 * 1024
_CODECS = ("bytes", "json", "pickle")
_SCALARS = frozenset({bool, int, float})


def offload(
    value: Any,
    job: Job,
    *,
    threshold: int | None = None,
    invocation: Invocation = "sync",
    keep: bool = False,
    ttl: float | None = None,
    pickled: bool = False,
) -> Any:
    """``value`` itself if its payload form is at most ``threshold`` bytes, else a marker.

    The payload form of bytes is base64 (4/3 of their length), of a JSON-able value its JSON
    text; other values always go by reference (a payload is JSON). ``threshold`` defaults to
    the invocation type's payload limit less 64 KiB for the rest of the payload; 0 offloads
    every value. ``keep`` makes the value survive being resolved (for values read by several
    functions); ``ttl`` (seconds) bounds its life below the job's. With ``pickled`` the payload
    is a pickle, not JSON (an executor's own channel): its form is the value's pickle, and any
    value may stay inline.
    """
    limit = payload_limit(invocation) - _HEADROOM if threshold is None else threshold
    if (
        value is None
        or type(value) in _SCALARS
        or (
            type(value) is str and len(value) * 4 <= limit  # (UTF-8: 4 bytes a character at most)
        )
    ):
        return value  # small for sure: not even encoded
    codec, data = _encode(value)
    base64 = codec == "bytes" and not pickled
    inline = -(-len(data) // 3) * 4 if base64 else len(data)
    if inline <= limit and (pickled or codec != "pickle"):
        return value
    key = f"refs/{secrets.token_hex(12)}"
    job.put(key, data, ttl=ttl)
    marker = {"job": job.ticket.job, "key": key, "size": len(data), "checksum": checksum(data),
              "codec": codec, "keep": keep}  # fmt: skip
    return {REF_KEY: marker}


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a marker :func:`offload` made."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF_KEY), dict)


def resolve(payload: Any, job: Job) -> Any:
    """``payload`` with every marker in it (at any depth of dicts and lists) replaced by its
    value; ChecksumError if a stored value is not the one its marker names."""
    if is_ref(payload):
        return _fetch(payload[REF_KEY], job)
    if isinstance(payload, dict):
        return {k: resolve(v, job) for k, v in payload.items()}
    if isinstance(payload, list):
        return [resolve(v, job) for v in payload]
    return payload


def _fetch(marker: dict[str, Any], job: Job) -> Any:
    try:
        key, size, codec = marker["key"], marker["size"], marker["codec"]
        expected = marker["checksum"]
        owner = marker.get("job", job.ticket.job)
    except KeyError as exc:
        raise ConfigError(f"malformed reference: no {exc}") from None
    if owner != job.ticket.job:
        raise ConfigError(f"a reference of job {owner!r} resolved with job {job.ticket.job!r}")
    if codec not in _CODECS:
        raise ConfigError(f"reference {key!r} has an unknown codec {codec!r}")
    data = job.get(key, delete_after_read=not marker.get("keep", False))
    if len(data) != size or checksum(data) != expected:
        raise ChecksumError(f"reference {key!r} names another value than the one stored there")
    if codec == "bytes":
        return data
    if codec == "json":
        return json.loads(data)
    # (Only this job's functions, holding its token, can have stored it.)
    return pickle.loads(data)


def _encode(value: Any) -> tuple[str, bytes]:
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes", bytes(value)
    try:
        return "json", json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return "pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
