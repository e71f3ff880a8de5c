"""A client's calls: connection pools to nodes, the channel to a controller, mapped arenas.

:class:`ClientCalls` is the half of :class:`~pocketlib.client.Client` that jobs use: one
request/response exchange with a node (:meth:`ClientCalls.call`), JSON calls to the controller,
and each node's tier mapped into this process when the node is on this host. It knows nothing
of jobs' routes; :class:`~pocketlib.client.job.Job` sits above it and
:class:`~pocketlib.client.Client` (which makes jobs) above both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from .. import heap
from ..bodies import decode_json
from ..config import Address, Timeouts
from ..connection import Connection, Deadline, NodePool
from ..errors import PocketError, RequestError
from ..protocol import Buffer, Flag, Op, ResponseHeader, pack_request
from ..ticket import Ticket
from .arena import SharedArena, open_arena

if TYPE_CHECKING:
    from ..rpc import JsonChannel

__all__ = ["ClientCalls"]

T = TypeVar("T")

_DELETE_AFTER_READ = Flag.DELETE_AFTER_READ
#: Values up to this size are joined with their header into one send.
_JOIN_LIMIT = 64 * 1024


class _HasTicket(Protocol):
    @property
    def ticket(self) -> Ticket: ...


class _Pools(dict[str, NodePool]):
    """Connection pools by node address, made on first use (tickets name new nodes)."""

    def __init__(self, timeouts: Timeouts, deadline: Deadline) -> None:
        super().__init__()
        self.timeouts = timeouts
        self.deadline = deadline

    def __missing__(self, node: str) -> NodePool:
        pool = self[node] = NodePool(Address.parse(node), self.timeouts, deadline=self.deadline)
        return pool


class ClientCalls:
    """Connection pools to nodes, and the way to a controller (the base of :class:`Client`).

    ``Client("host:port")`` talks to a controller (register and attach jobs);
    ``Client(["host:port", ...])`` to fixed nodes (direct mode, :meth:`open_job`).
    """

    def __init__(
        self,
        nodes: str | Address | Sequence[str | Address] = (),
        *,
        controller: str | Address | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        if isinstance(nodes, str | Address):  # one address: the controller
            controller, nodes = nodes, ()
        if not nodes and controller is None:
            raise RequestError("a client needs node addresses or a controller address")
        heap.tune()  # values arrive in fresh buffers: freed ones are kept for the next
        self.timeouts = timeouts or Timeouts()
        self.controller = str(Address.parse(controller)) if controller is not None else None
        self._control: JsonChannel | None = None
        #: When every call must end (set by a serverless handler for one invocation).
        self.deadline = Deadline()
        self.pools = _Pools(self.timeouts, self.deadline)
        #: The nodes of direct mode, in the order given.
        self.nodes = [str(Address.parse(n)) for n in nodes]
        for node in self.nodes:
            _ = self.pools[node]
        # Request ids only need to differ among requests in flight on one connection; one
        # counter per client lets a frame be built before a connection is taken.
        self._ids = itertools.count(1)
        # Per node: its tier mapped into this process (co-located), or None; probed once.
        self._arenas: dict[str, SharedArena | None] = {}

    def call(
        self,
        node: str,
        op: int,
        job: bytes = b"",
        token: bytes = b"",
        key: bytes = b"",
        *,
        body: Sequence[Buffer] = (),
        read: Callable[[Connection, ResponseHeader], T] | None = None,
        flags: int = 0,
        offset: int = 0,
        length: int = 0,
        ttl_ms: int = 0,
        arg: int = 0,
        value_checksum: int = 0,
        map_version: int = 0,
    ) -> tuple[ResponseHeader, T | bytes]:
        """One request/response exchange with ``node``.

        ``length`` is the body's size when there is a body, else (ranged GET) the range's;
        ``map_version`` is the weight-map version of the ticket the request is made under.
        ``read`` consumes the response body (default: read it as bytes). A request on a pooled
        connection that the node closed while it sat idle is retried once on a fresh one.
        """
        if body:
            length = len(body[0]) if len(body) == 1 else sum(len(b) for b in body)
        rid = next(self._ids) & 0xFFFFFFFF
        head = pack_request(
            op, rid, flags, job, token, key, offset, length, ttl_ms, arg, value_checksum,
            map_version,
        )  # fmt: skip
        if not body:
            parts: Sequence[Buffer] = (head,)
        elif length <= _JOIN_LIMIT:
            parts = (head + body[0],) if len(body) == 1 else (head + b"".join(body),)
        else:
            parts = (head, *body)
        return self.pools[node].exchange(parts, rid, read, retry=not flags & _DELETE_AFTER_READ)

    def exchange(
        self,
        node: str,
        parts: Sequence[Buffer],
        rid: int,
        read: Callable[[Connection, ResponseHeader], T] | None = None,
        *,
        retry: bool = True,
    ) -> tuple[ResponseHeader, T | bytes]:
        """Send one framed request (``parts``) to ``node`` and read its response (see
        :meth:`NodePool.exchange`: a stale pooled connection is retried once if ``retry``)."""
        return self.pools[node].exchange(parts, rid, read, retry=retry)

    # -- with a controller --------------------------------------------------------------------
    def control(self, op: int, body: Mapping[str, Any], *, job: str = "", token: bytes = b""
                ) -> dict[str, Any]:  # fmt: skip
        """One JSON request to the controller."""
        if self.controller is None:
            raise RequestError("this client has no controller address")
        if self._control is None:
            from ..rpc import JsonChannel

            self._control = JsonChannel(self.controller, self.timeouts)
        return self._control.call(op, body, job=job, token=token)

    def deregister_job(self, job: Ticket | _HasTicket) -> dict[str, Any]:
        """Free the job's allocation and all its data on every node."""
        ticket = job if isinstance(job, Ticket) else job.ticket
        return self.control(Op.JOB_DEREGISTER, {}, job=ticket.job, token=ticket.token)

    def ticket(self, job: Ticket | _HasTicket, *, full: str | None = None) -> Ticket:
        """The job's current ticket from the controller (new weight maps, lost nodes).

        ``full``: the address of a node of the job that refused a write for want of room,
        which the controller then takes out of the job's newest weight map if it can."""
        old = job if isinstance(job, Ticket) else job.ticket
        body = {"full": full} if full else {}
        return Ticket.from_dict(self.control(Op.JOB_INFO, body, job=old.job, token=old.token))

    def status(self) -> dict[str, Any]:
        """The controller's view: nodes, jobs, autoscaling decisions, usage and cost."""
        return self.control(Op.CLUSTER_STATUS, {})

    # -- nodes ----------------------------------------------------------------------------------
    def arena(self, node: str) -> SharedArena | None:
        """``node``'s tier mapped into this process if it is on this host, else None."""
        try:
            return self._arenas[node]
        except KeyError:
            pass
        try:
            info = decode_json(self.call(node, Op.MAP_INFO)[1])
        except PocketError:
            info = {}
        arena = self._arenas[node] = open_arena(info)
        return arena

    def node_stats(self, nodes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each node's STATS: counters, tier accounting, per-job bytes used."""
        nodes = list(nodes) if nodes is not None else list(self.pools)
        return {node: decode_json(self.call(node, Op.STATS)[1]) for node in nodes}

    def ping(self) -> None:
        """Round trip to every node (and the controller); raises if one is unreachable."""
        for node in list(self.pools):
            self.call(node, Op.PING)
        if self.controller is not None:
            self.control(Op.PING, {})

    def drop_idle(self) -> None:
        """Close the pooled connections not in use, so that the next calls connect afresh
        (after a frozen serverless environment thaws, its sockets may be dead)."""
        for pool in list(self.pools.values()):
            pool.drop_idle()
        if self._control is not None:
            self._control.pool.drop_idle()

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in list(self.pools.values()):
            pool.close()
        if self._control is not None:
            self._control.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
