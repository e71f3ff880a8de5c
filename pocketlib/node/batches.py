"""The node's side of batches: MULTI_PUT and MULTI_GET, many keys of one job in one frame.

Per-key work is what a batch costs, so both go to the tier once per run of small values
(``TierDriver.put_many``, ``TierDriver.read_many``) and build their answers in one buffer
(:class:`~pocketlib.bodies.EntryWriter`); larger values are committed, or leased and sent
from the tier's memory, one by one. A MULTI_GET from a client that maps the tier (flag SHARED)
is answered with the places of large values instead of their bytes
(:mod:`pocketlib.node.shared`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..bodies import EntryWriter, decode_entries, decode_keys, encode_extents
from ..errors import NotFoundError, PocketError, RequestError
from ..protocol import Flag
from ..tiers.base import Lease, ObjectMeta, PutItem
from .conn import check_key
from .values import SMALL_VALUE

if TYPE_CHECKING:
    from ..protocol import RequestHeader
    from .values import ValueSession

__all__ = ["SharedLeases", "multi_get", "multi_put"]

_REPLACED, _SHARED, _STORED = Flag.REPLACED, Flag.SHARED, Flag.STORED
#: An entry of a MULTI_PUT not yet answered (a small value waiting for its run to be stored).
_PENDING = RequestError("not stored")


@dataclass(frozen=True, slots=True)
class SharedLeases:
    """How a MULTI_GET from a client that maps the tier shares values: those above ``above``
    bytes by extents, their leases handed to ``hold(request_id, leases)``."""

    above: int
    hold: Callable[[int, list[Lease]], None]


def multi_put(session: ValueSession, h: RequestHeader, job: str, body: bytes) -> None:
    """MULTI_PUT: each entry stored (or refused), answered as one entry of one answer.

    Runs of small values are stored with one tier call each (``store_batch``); a
    larger value is reserved, filled and committed on its own, after the run before it,
    so entries take effect in their order."""
    ttl = h.ttl_ms / 1000 if h.ttl_ms else None
    entries = decode_entries(body)
    outcomes: list[ObjectMeta | Exception] = []
    replaced: dict[int, bytes] = {}  # entry -> the striped manifest it replaced
    run: list[PutItem] = []  # small values not yet stored
    run_at: list[int] = []  # their entries

    def store_run() -> None:
        for j, got in zip(run_at, session.store_batch(job, run, ttl, h.map_version), strict=True):
            outcomes[j] = got
        run.clear()
        run_at.clear()

    for i, e in enumerate(entries):
        outcomes.append(_PENDING)
        try:
            key = e.key.decode("utf-8")
            check_key(key)
            if e.flags & Flag.PERSIST and not session.node.persists:
                raise RequestError("this node has no persist tier (start it with --persist)")
            if e.flags & _REPLACED:
                manifest = session.striped_value(job, key)
                if manifest is not None:
                    replaced[i] = manifest
            if len(e.value) <= SMALL_VALUE:
                run.append((key, e.value, e.checksum, e.flags & _STORED))
                run_at.append(i)
                continue
            if run:  # (what came before is stored first)
                store_run()
            res = session.tier.reserve(len(e.value))
            res.fill(e.value)
            outcomes[i] = session.commit(
                res, job, key, checksum=e.checksum, flags=e.flags & _STORED, ttl=ttl,
                map_version=h.map_version,
            )  # fmt: skip
        except (PocketError, UnicodeDecodeError) as exc:
            outcomes[i] = exc
    if run:
        store_run()
    out = EntryWriter()
    for i, (e, outcome) in enumerate(zip(entries, outcomes, strict=True)):
        if isinstance(outcome, Exception):
            out.add_error(e.key, outcome)
        elif i in replaced:  # as for PUT: the manifest it replaced, for its chunks
            out.add(e.key, replaced[i], 0, Flag.STRIPED, outcome.version)
        else:
            out.add(e.key, b"", 0, 0, outcome.version)
    session.count(len(body), 0)
    session._reply_parts(h.request_id, out.finish())


def multi_get(
    session: ValueSession, h: RequestHeader, job: str, body: bytes,
    share: SharedLeases | None = None,
) -> None:  # fmt: skip
    """MULTI_GET: each key's value, or its error, as one entry of one answer.

    Small values are copied out in one tier call for the whole batch; larger ones are
    leased and sent from the tier's memory. With ``share`` (a client that maps this
    node's tier), values above ``share.above`` are answered as their extents in the
    mapping (entry flag SHARED) and stay leased, under the request's id, until the
    client's SHM_RELEASE of it.
    """
    take = bool(h.flags & Flag.DELETE_AFTER_READ)
    tier = session.tier
    out = EntryWriter()
    raws: list[bytes] = []
    keys: list[str] = []
    for raw in decode_keys(body):
        try:
            key = raw.decode("utf-8")
            check_key(key)
        except (PocketError, UnicodeDecodeError) as exc:
            out.add_error(raw, exc)
            continue
        raws.append(raw)
        keys.append(key)
    leases: list[Lease] = []
    kept: list[Lease] = []
    size = 0
    try:
        copies = tier.read_many(job, keys, SMALL_VALUE, take=take)
        for raw, key, got in zip(raws, keys, copies, strict=True):
            if got is None:  # too large to copy: leased, and sent from the tier's memory
                try:
                    lease = tier.lease(job, key, take=take)
                except PocketError as exc:
                    got = exc
            if isinstance(got, PocketError):
                if type(got) is NotFoundError and session.stale(h, job):
                    got = session.stale_error(h.map_version, job, "a miss")
                out.add_error(raw, got)
                continue
            if got is not None:
                meta, data = got
                size += meta.size
                out.add(raw, data, 0, meta.flags, meta.checksum)
                continue
            meta = lease.meta
            size += meta.size
            if share is not None and meta.size > share.above:
                kept.append(lease)
                extents = encode_extents(lease.loc)
                out.add(raw, extents, 0, meta.flags | _SHARED, meta.checksum)
                continue
            leases.append(lease)
            value = lease.buffers[0] if len(lease.buffers) == 1 else lease.tobytes()
            out.add(raw, value, 0, meta.flags, meta.checksum)
        session._reply_parts(h.request_id, out.finish())
        if kept and share is not None:  # the client's now, until it releases them
            share.hold(h.request_id, kept)
            kept = []
    finally:
        for lease in leases + kept:
            lease.release()
    session.count(0, size)
