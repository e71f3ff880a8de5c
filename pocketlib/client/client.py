"""The client: :class:`Client` reaches nodes (and a controller); :class:`Job` does the rest.

Two ways in:

* with a controller (``Client("controller:7070").register_job(name, JobHints(...))``, or
  ``attach(ticket)`` inside a function), a job's keys route by its weight maps;
* direct mode (``connect(["node:7000", ...], job=...)``) over fixed nodes of equal weight.

Either way keys route to nodes in the client (weighted rendezvous hashing; no metadata hop),
and every value carries a 64-bit checksum (XXH3) that the client verifies on every read.
"""

from __future__ import annotations

import copyreg
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import Address, JobHints, Timeouts
from ..errors import RequestError
from ..protocol import Op
from ..routing.weightmap import WeightMap
from ..ticket import DEFAULT_STRIPE_SIZE, Ticket
from .base import ObjectInfo
from .calls import ClientCalls
from .job import Job

__all__ = ["Client", "Job", "ObjectInfo", "attach", "attached", "connect"]


class Client(ClientCalls):
    """Connection pools to nodes, and the way to a controller; makes :class:`Job` handles.

    ``Client("host:port")`` talks to a controller (register and attach jobs);
    ``Client(["host:port", ...])`` to fixed nodes (direct mode, :meth:`open_job`).
    """

    # -- direct mode --------------------------------------------------------------------------
    def open_job(self, name: str, *, stripe_size: int = DEFAULT_STRIPE_SIZE) -> Job:
        """Open (or create) job ``name`` on every node of direct mode; returns its handle.

        Values above ``stripe_size`` are split into chunks spread over the nodes.
        """
        raw = name.encode()
        if not raw:
            raise RequestError("a job needs a name")
        if not self.nodes:
            raise RequestError("open_job needs node addresses; with a controller, register_job")
        tokens: dict[str, bytes] = {}
        for node in self.nodes:
            _, token = self.call(node, Op.JOB_OPEN, raw)
            tokens[node] = bytes(token)
        maps = (WeightMap(1, dict.fromkeys(self.nodes, 1.0)),)
        ticket = Ticket(name, name, b"", maps, stripe_size=stripe_size)
        return Job(self, ticket, tokens)

    # -- with a controller --------------------------------------------------------------------
    def register_job(self, name: str, hints: JobHints | None = None) -> Job:
        """Register job ``name`` with the controller; its handle (``job.ticket`` for functions).

        The controller places it on the cheapest tier that meets the hints and starts nodes
        if it must (without waiting for them unless no running node can take any of it).
        CapacityError if the cluster cannot hold it at all.
        """
        body = {"name": name, "hints": (hints or JobHints()).as_dict()}
        return self.attach(Ticket.from_dict(self.control(Op.JOB_REGISTER, body)))

    def attach(self, ticket: Ticket | str | bytes | Mapping[str, Any]) -> Job:
        """The job of ``ticket`` (or its JSON), using this client's connections."""
        return Job(self, Ticket.parse(ticket))


def connect(
    nodes: Sequence[str | Address],
    job: str,
    *,
    timeouts: Timeouts | None = None,
    stripe_size: int = DEFAULT_STRIPE_SIZE,
) -> Job:
    """Connect to fixed ``nodes`` ("host:port") and open ``job`` on them (direct mode).

    With several nodes, values above ``stripe_size`` are split into chunks spread over them.

    >>> with pocketlib.connect(["127.0.0.1:7000"], job="sort") as job:   # doctest: +SKIP
    ...     job.put("part-0", b"...")
    """
    client = Client(list(nodes), timeouts=timeouts)
    try:
        handle = client.open_job(job, stripe_size=stripe_size)
    except BaseException:
        client.close()
        raise
    handle._owns_client = True
    return handle


def attach(ticket: Ticket | str | bytes | Mapping[str, Any], *, timeouts: Timeouts | None = None
           ) -> Job:  # fmt: skip
    """The job of a ticket, inside a serverless function: no controller round trip.

    >>> job = pocketlib.attach(event["ticket"])   # doctest: +SKIP
    >>> job.put("map-3/part-0", data)             # doctest: +SKIP
    """
    parsed = Ticket.parse(ticket)
    client = Client(parsed.nodes, controller=parsed.controller, timeouts=timeouts)
    handle = client.attach(parsed)
    handle._owns_client = True
    return handle


_attached: dict[str, Job] = {}
_attached_lock = threading.Lock()


def attached(ticket: Ticket | str | Mapping[str, Any]) -> Job:
    """The job of ``ticket``, attached once per process and shared (with its connections) by
    every caller that names the same ticket: a worker's calls, filesystem instances, storage
    backends. Close it never: it lives as long as the process."""
    text = ticket if isinstance(ticket, str) else Ticket.parse(ticket).to_json()
    with _attached_lock:
        job = _attached.get(text)
        if job is None:
            job = _attached[text] = attach(text)
        return job


def _reduce_job(job: Job) -> tuple[Any, tuple[Any, ...]]:
    """How a :class:`Job` pickles: by what opens it again, never by its connections (function
    arguments are pickled: Lithops, multiprocessing, Dask): a controller job by its current
    ticket (:func:`attach`), a direct-mode job by its nodes, name and stripe size.

    Registered here rather than as ``Job.__reduce__`` because opening a job again needs
    :class:`Client`, which sits above :class:`Job`.
    """
    timeouts = job.client.timeouts
    if job.ticket.controller is None and not job.ticket.token:
        return _reopen, (tuple(job.client.nodes), job.name, job.ticket.stripe_size, timeouts)
    return _reattach, (job.ticket, timeouts)


copyreg.pickle(Job, _reduce_job)


def _reattach(ticket: Ticket, timeouts: Timeouts) -> Job:
    """A pickled controller job, opened again (see :func:`_reduce_job`)."""
    return attach(ticket, timeouts=timeouts)


def _reopen(nodes: Sequence[str], name: str, stripe_size: int, timeouts: Timeouts) -> Job:
    """A pickled direct-mode job, opened again on its nodes (see :func:`_reduce_job`)."""
    return connect(nodes, name, timeouts=timeouts, stripe_size=stripe_size)
