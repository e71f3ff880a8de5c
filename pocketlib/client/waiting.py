"""Waiting until keys are stored, on the nodes that will store them (no polling).

:func:`wait_for` sends each node the keys that the job's newest weight map routes to it (a WAIT
request, answered when they are all stored, after at most :data:`~pocketlib.protocol.MAX_WAIT_MS`,
or when the job's map changes) and asks again until every key is stored or the caller's timeout
passes. Keys an older weight map placed are found where they are first.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..bodies import decode_keys, encode_keys
from ..errors import PocketTimeoutError, StaleTicketError, TransportError
from ..protocol import MAX_WAIT_MS, Op, validate_key

if TYPE_CHECKING:
    from .base import JobBase

__all__ = ["wait_for"]


def wait_for(job: JobBase, keys: Iterable[str], timeout: float | None = None) -> None:
    """Return once every key of ``keys`` is stored in ``job``; PocketTimeoutError (naming the
    keys still missing) after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = {validate_key(k) for k in keys}
    io = job.client.timeouts.io
    longest = MAX_WAIT_MS if io is None else min(MAX_WAIT_MS, max(1, int(io * 800)))
    look_everywhere = not job._single
    while pending:
        if look_everywhere:  # stored under an older map: found there, never moved
            pending = {raw for raw in pending if not job.exists(raw.decode())}
            look_everywhere = False
            if not pending:
                return
        left = None if deadline is None else deadline - time.monotonic()
        ms = longest if left is None else max(0, min(longest, int(left * 1000)))
        per_node: dict[str, list[bytes]] = defaultdict(list)
        for raw in sorted(pending):
            per_node[job._node_for(raw)].append(raw)
        before = job.ticket
        try:
            for node, raws in per_node.items():
                body = job._call(node, Op.WAIT, body=[encode_keys(raws)], arg=ms)[1]
                still = set(decode_keys(body))
                pending -= set(raws) - still
        except (StaleTicketError, TransportError):
            if not job._refreshed(before):  # a newer map (or a node gone): route again
                raise
            look_everywhere = not job._single
            continue
        if pending and deadline is not None and time.monotonic() >= deadline:
            names = sorted(k.decode() for k in pending)
            raise PocketTimeoutError(
                f"{len(names)} key(s) not stored within {timeout:g} s: {', '.join(names[:5])}"
                + (" ..." if len(names) > 5 else "")
            )
