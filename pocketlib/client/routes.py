"""A job's routes: its ticket, the weight-map versions keys route by, and keeping them fresh.

:class:`RoutedJob` is the half of :class:`~pocketlib.client.job.Job` that knows where keys live.
Writes go to a key's node under the newest weight map; reads look at the newest version's node
first and at older versions' nodes on a miss. Every request carries the ticket's newest
version; a node that knows a newer one (the controller tells nodes before it hands the new
map out) refuses writes and deletes made under the older ticket and answers a miss with
StaleTicketError, so a handle however old never takes a miss for "no such key" when a newer
map may send the key elsewhere. Such a refusal, or a node that is gone, full or draining,
refreshes the ticket from the controller and the operation is repeated (while refreshes give
newer tickets). Several threads may share one job: a refresh swaps routes so that a reader
never mixes two tickets, and a write that raced a refresh is repeated under the new one.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    CapacityError,
    NodeLostError,
    NotFoundError,
    PocketError,
    StaleTicketError,
    TransportError,
)
from ..protocol import MAX_MAP_VERSION, ResponseHeader, validate_key
from ..routing.weightmap import VersionedRouter
from ..ticket import Ticket

if TYPE_CHECKING:
    from .calls import ClientCalls

__all__ = ["RoutedJob"]

T = TypeVar("T")

#: What makes any operation refresh the ticket and try again: a node that cannot be reached
#: (retired or found dead since the ticket was issued), or one that knows a newer weight map.
READ_RETRIES: tuple[type[PocketError], ...] = (TransportError, StaleTicketError)
#: Times an operation is tried while each refresh gives a newer ticket.
_ATTEMPTS = 4


class RoutedJob:
    """A job's ticket and routes (the base of :class:`~pocketlib.client.job.Job`)."""

    client: ClientCalls

    def _use(self, ticket: Ticket, tokens: Mapping[str, bytes] | None = None) -> None:
        """Route by ``ticket`` from now on (at construction and on refresh).

        Threads sharing the job may be routing meanwhile: the tokens (for every node of every
        version, so a superset of the old ones) are in place before any new route is.
        """
        self._changing = getattr(self, "_changing", 0) + 1  # odd while routes change
        self._tokens = dict(tokens) if tokens else dict.fromkeys(ticket.nodes, ticket.token)
        # Reads look at every version while the routes change (the one-version shortcut is
        # taken only once everything below is in place); ``ticket`` goes last: readers
        # compare it with the one they started with to know a read may be repeated.
        self._single = False
        #: The job's name (its id on the nodes is ``ticket.job``).
        self.name = ticket.name
        self._job = ticket.job.encode()
        self.router = VersionedRouter(ticket.maps)
        self._lost = ticket.lost
        self._gone = ticket.lost | ticket.retired
        self._node_for = ticket.maps[-1].router.node_for
        self._live_nodes = [n for n in self.router.nodes if n not in self._gone]
        # Striping needs two nodes to gain anything; values above this length are striped.
        many = len(ticket.maps[-1].weights) > 1
        self._stripe_above = ticket.stripe_size if many else sys.maxsize
        #: Whether any version has several nodes, so striped values may exist.
        self._may_stripe = any(len(m.weights) > 1 for m in ticket.maps)
        self._single = len(ticket.maps) == 1
        #: What requests carry as their map version (nodes fence older ones); set once the
        #: routes are, so no request claims the new version while routing by the old map.
        self._version = min(ticket.version, MAX_MAP_VERSION)
        self.ticket = ticket
        self._changing += 1

    def refresh(self, *, full: str | None = None) -> bool:
        """Fetch the job's current ticket from the controller; whether it changed.

        A ticket older than the one in use (a slow answer overtaken by another thread's
        refresh) is ignored: weight maps only ever gain versions. ``full`` names a node of
        the job that refused a write for want of room: the controller moves the job's share
        off it (a new weight map without it) when the job has somewhere else to go.
        """
        ticket = self.client.ticket(self.ticket, full=full)
        if ticket.version < self.ticket.version or ticket.as_dict() == self.ticket.as_dict():
            return False
        self._use(ticket)
        return True

    def _route(self, key: str) -> tuple[str, bytes]:
        raw = validate_key(key)
        return self._node_for(raw), raw

    def _read(self, key: str, fn: Callable[[str, bytes], T]) -> T:
        """``fn(node, raw_key)`` on the node holding ``key``: with several weight-map
        versions, the newest version's node first, then each older one's on a miss.

        A node that cannot be reached makes the job refresh its ticket (it may have been
        retired or found dead since) and try again, as does a miss on a node that knows a newer
        weight map than this ticket's.
        """
        return self._fresh(lambda: self._read_once(key, fn))

    def _read_once(self, key: str, fn: Callable[[str, bytes], T]) -> T:
        raw = validate_key(key)
        if self._single:
            return fn(self._node_for(raw), raw)
        missing: PocketError | None = None
        for node in self.router.read_nodes(raw):
            if node in self._gone:
                if node not in self._lost:  # retired once it held none of the job's data
                    continue
                missing = NodeLostError(
                    f"{key!r} may have been on {node}, which was lost with its data"
                )
                continue
            try:
                return fn(node, raw)
            except NotFoundError as exc:
                missing = missing or exc
        raise missing or NotFoundError(f"no object {key!r}")

    def _call(self, node: str, op: int, key: bytes = b"", **kw: Any) -> tuple[ResponseHeader, Any]:
        return self.client.call(
            node, op, self._job, self._tokens[node], key, map_version=self._version, **kw
        )

    def _refreshed(self, before: Ticket, failed: PocketError | None = None) -> bool:
        """After a write refused by a draining or full node, or a node that is gone: whether
        the job now has a newer ticket than ``before``, the one the failed attempt used (then
        it is in use, and the attempt may be repeated: a newer weight map may send the key
        elsewhere). Another thread may have fetched it meanwhile. A node that was full is
        named to the controller, which may leave it out of the job's next weight map."""
        if self.ticket is not before:
            return True
        if self.ticket.controller is None:
            return False
        full = failed.node if isinstance(failed, CapacityError) else None
        try:
            return self.refresh(full=full)
        except PocketError:
            return False

    def _fresh(
        self,
        fn: Callable[[], T],
        retry_on: tuple[type[PocketError], ...] = READ_RETRIES,
        *,
        settle: bool = False,
    ) -> T:
        """``fn()``; if it raises one of ``retry_on`` (by default: a node cannot be reached or
        knows a newer weight map), again after refreshing the ticket, for as long as each
        refresh gives a newer one (the node may have been retired or found dead, or the job's
        weight map grown, since this ticket was issued).

        With ``settle`` (writes and deletes, which are idempotent), ``fn`` is also repeated if
        another thread changed the routes while it ran, so that it takes effect under one
        ticket, not half under each."""
        for _ in range(_ATTEMPTS):
            before, changing = self.ticket, self._changing
            try:
                result = fn()
            except retry_on as exc:
                if not self._refreshed(before, exc):
                    raise
                continue
            if not settle or (changing == self._changing and not changing & 1):
                return result
        return fn()

    def _drop_older(self, raw: bytes) -> None:
        """Delete the copies of ``raw`` that older weight-map versions placed on other nodes
        than the newest, so that no read can find an overwritten value there.

        A write is acknowledged only once this is done: an older node that cannot be reached
        raises (a TransportError subclass), and the write is repeated under a newer ticket or
        fails. Had it been ignored, a node that was only unreachable for a moment would keep
        the overwritten value, and a later weight map that sends the key back to that node,
        or the loss of the newest one, would let reads find it again. A node the ticket counts
        as gone (lost or retired) is skipped: its copies went with it.
        """
        nodes = self.router.read_nodes(raw)
        for node in nodes[1:]:
            if node not in self._gone:
                self._delete_at(node, raw)

    def _delete_older(self, raw: bytes, nodes: Iterable[str]) -> None:
        """Delete copies of a key that older weight-map versions placed elsewhere, after the
        newest was taken (read and deleted): the value is the caller's now, so a node that
        cannot be reached is passed over rather than made to fail the read and lose it."""
        for node in nodes:
            with contextlib.suppress(TransportError):
                self._delete_at(node, raw)

    def _delete_at(self, node: str, raw: bytes) -> bool:
        raise NotImplementedError  # the job's: a striped value's chunks go with it
