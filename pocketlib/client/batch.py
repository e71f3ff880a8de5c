"""Many small values in few frames: MULTI-PUT / MULTI-GET batches, pipelined per node.

:func:`put_many` and :func:`get_many` are :class:`~pocketlib.client.job.Job`'s: they group a job's
items per node (a large value travels alone, or striped), and a get_many over several
weight-map versions asks each key's nodes round by round, newest version first. Keys go in
frames of at most :data:`BATCH_KEYS` (and a MULTI_PUT frame at most :data:`BATCH_BYTES` of
values), pipelined on one connection per node and sent to every node at once
(:mod:`pocketlib.client.pipeline`): a thousand small puts cost a few round trips, and the
nodes of a batch store their shares at the same time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..bodies import EntryWriter, encode_keys
from ..errors import (
    CapacityError,
    NotFoundError,
    PocketError,
    StaleTicketError,
    error_for_status,
)
from ..protocol import Buffer, Flag, Op, checksum
from . import stripes
from .pipeline import Call, run

if TYPE_CHECKING:
    from .base import JobBase

__all__ = ["BATCH_BYTES", "BATCH_KEYS", "Item", "get_many", "put_many"]

#: Keys of one MULTI_PUT / MULTI_GET frame, and values of one MULTI_PUT frame (a larger value
#: travels alone).
BATCH_KEYS = 256
BATCH_BYTES = 1024 * 1024

_NOT_FOUND, _STALE = NotFoundError.status, StaleTicketError.status
_SPECIAL = Flag.LZ4 | Flag.STRIPED

#: A value to put, as sent: raw key, bytes, entry flags.
Item = tuple[bytes, Buffer, int]


def put_many(
    job: JobBase, items: Mapping[str, Buffer], ttl_ms: int, compress: bool, persist: bool
) -> None:
    """Store ``items`` for ``job``, batched per node; the first error once every item was
    tried (items that succeeded stay stored)."""
    per_node: dict[str, list[Item]] = defaultdict(list)
    large: list[tuple[str, Item]] = []
    # Where striped values may exist, each put asks for the manifest it replaces (see put()).
    replacing = Flag.REPLACED if job._may_stripe else 0
    for key, data in items.items():
        node, raw, view, flags = job._encode(key, data, compress, persist)
        if len(view) > job._stripe_above:  # striped: no one node
            large.append(("", (raw, view, flags)))
        elif len(view) > BATCH_BYTES:  # a value larger than a batch travels alone
            large.append((node, (raw, view, flags | replacing)))
        else:
            per_node[node].append((raw, view, flags | replacing))
    first_error: PocketError | None = None
    stored: list[bytes] = []  # keys whose new value is in
    pools = job.client.pools
    calls = [Call(pools[node], Op.MULTI_PUT, job._job, job._tokens[node], _frames(entries),
                  ttl_ms=ttl_ms, map_version=job._version)
             for node, entries in per_node.items()]  # fmt: skip
    # A node that failed does not keep the others from their items.
    for node, outcome in zip(per_node, run(calls), strict=True):
        first_error = first_error or outcome.error
        for result in outcome.entries:
            if result.status:
                if first_error is None:
                    first_error = error_for_status(result.status, bytes(result.value).decode())
                    if isinstance(first_error, CapacityError):
                        first_error.node = node  # (the job's ticket may send writes elsewhere)
                continue
            stored.append(result.key)
            if result.flags & Flag.STRIPED:  # it replaced a striped value: its chunks go
                stripes.drop_chunks(job, result.key, result.value)
    for node, (raw, view, flags) in large:
        try:
            if not node:
                stripes.put(job, raw, view, flags, ttl_ms)
                stored.append(raw)
                continue
            old = job._put_at(node, raw, view, flags, ttl_ms)
            stored.append(raw)
            if old is not None:
                stripes.drop_chunks(job, raw, old)
        except PocketError as exc:
            first_error = first_error or exc
    if not job._single:  # as put(): no older copy of a key that was stored may stay
        for raw in stored:
            try:
                job._drop_older(bytes(raw))
            except PocketError as exc:
                first_error = first_error or exc
    if first_error is not None:
        raise first_error


def get_many(
    job: JobBase, wanted: Sequence[bytes], delete_after_read: bool, out: dict[str, bytes]
) -> None:
    """Put the values of the ``wanted`` keys that exist into ``out`` (by key); the nodes of
    one round are asked at once. Errors are raised once every answer was read, so values a
    delete-after-read took are in ``out`` first."""
    flags = Flag.DELETE_AFTER_READ if delete_after_read else 0
    stale: StaleTicketError | None = None  # a miss on a node that knows a newer weight map
    error: PocketError | None = None
    if job._single:
        per_node: dict[str, list[bytes]] = defaultdict(list)
        node_for = job._node_for
        for raw in wanted:
            per_node[node_for(raw)].append(raw)
        stale, error = _ask(job, per_node, flags, out, None)
        if error is not None:
            raise error
        if stale is not None:
            raise stale
        return
    # Round r asks each key's r-th candidate node (newest weight map first).
    candidates = {raw: [n for n in job.router.read_nodes(raw) if n not in job._gone]
                  for raw in wanted}  # fmt: skip
    round_ = 0
    while candidates:
        per_node = defaultdict(list)
        for raw, nodes in candidates.items():
            if round_ < len(nodes):
                per_node[nodes[round_]].append(raw)
        if not per_node:
            break
        answered: list[bytes] = []
        refused, error = _ask(job, per_node, flags, out, answered)
        stale = refused or stale
        for raw in answered:
            nodes = candidates.pop(raw)
            if delete_after_read and len(nodes) > round_ + 1:
                job._delete_older(raw, nodes[round_ + 1 :])
        if error is not None:
            raise error
        round_ += 1
    if stale is not None:
        raise stale


def _ask(
    job: JobBase,
    per_node: Mapping[str, list[bytes]],
    flags: int,
    out: dict[str, bytes],
    answered: list[bytes] | None,
) -> tuple[StaleTicketError | None, PocketError | None]:
    """MULTI_GET of each node's keys, every node at once: the values found go into ``out``,
    the keys answered for good (found, or refused as asked under a stale ticket) into
    ``answered``. Returns the StaleTicketError of such a refusal (the caller refreshes and
    asks again) and the first other error; both after every answer was read."""
    take = bool(flags & Flag.DELETE_AFTER_READ)
    value_of = job._value
    pools, arena = job.client.pools, job.client.arena
    calls = [
        Call(pools[node], Op.MULTI_GET, job._job, job._tokens[node],
             [[encode_keys(raws[i : i + BATCH_KEYS])] for i in range(0, len(raws), BATCH_KEYS)],
             flags=flags, map_version=job._version, arena=arena(node))
        for node, raws in per_node.items()
    ]  # fmt: skip
    stale: StaleTicketError | None = None
    error: PocketError | None = None
    for outcome in run(calls):
        error = error or outcome.error
        for key, value, status, value_flags, _ in outcome.entries:
            if status:
                if status == _NOT_FOUND:  # missing keys are left out
                    continue
                if status != _STALE:
                    error = error or error_for_status(status, bytes(value).decode())
                    continue
                stale = StaleTicketError(bytes(value).decode())
            elif type(value) is bytes and not value_flags & _SPECIAL:
                out[key.decode()] = value  # (a copy already: sliced from the answer)
            else:
                try:
                    out[key.decode()] = value_of(value_flags, key, value, take)
                except PocketError as exc:
                    error = error or exc
                    continue
            if answered is not None:
                answered.append(key)
    return stale, error


def _frames(items: list[Item]) -> Iterator[list[Buffer]]:
    """MULTI_PUT bodies of at most BATCH_KEYS entries or BATCH_BYTES of values each.

    A body is encoded (its values hashed) only when the pipeline is about to send it, so
    the client encodes one frame while the node stores the one before."""
    out, keys, size = EntryWriter(), 0, 0
    for raw, view, flags in items:
        n = len(view)
        if keys and (keys == BATCH_KEYS or size + n > BATCH_BYTES):
            yield out.finish()
            out, keys, size = EntryWriter(), 0, 0
        out.add(raw, view, 0, flags, checksum(view))
        keys += 1
        size += n
    if keys:
        yield out.finish()
