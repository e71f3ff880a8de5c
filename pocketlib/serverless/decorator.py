"""``@handler``: a Lambda handler gets its pocketlib job with one decorator.

The job is attached once per execution environment (a process) and reused by warm
invocations; each invocation gets a deadline from its context, connections left idle across a
freeze are dropped before they are used, and large values in the event or the result travel by
reference (:mod:`pocketlib.serverless.refs`).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..errors import ConfigError
from ..ticket import Ticket
from .context import Invocation, seconds_left
from .refs import offload, resolve

if TYPE_CHECKING:
    from ..client.job import Job

__all__ = ["handler", "is_cold_start"]

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[..., Any]

#: Where a handler looks for a ticket when the event has none.
TICKET_ENV = "POCKET_TICKET"
#: Ticket texts remembered per environment (jobs share few; a bound keeps a leak out).
_TEXTS_KEPT = 64


class _Environment:
    """What one execution environment (this process) keeps across invocations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Attached jobs by (job id, token): one per job, however many invocations use it.
        self.jobs: dict[tuple[str, bytes], Job] = {}
        #: When each job's last invocation ended (time.monotonic()).
        self.last_used: dict[tuple[str, bytes], float] = {}
        #: Ticket texts seen, by the job they name (parsing one costs more than a put).
        self.by_text: dict[str, tuple[str, bytes]] = {}
        self.invocations = 0
        self.cold = True


_env = _Environment()


def is_cold_start() -> bool:
    """Whether the current (or last) invocation is the first of this execution environment."""
    return _env.cold


@overload
def handler(fn: F) -> F: ...


@overload
def handler(
    fn: None = None,
    *,
    ticket_key: str = "ticket",
    margin: float = 0.5,
    revalidate_after: float = 30.0,
    resolve_refs: bool = True,
    offload_result: bool = True,
    invocation: Invocation = "sync",
) -> Callable[[F], F]: ...


def handler(
    fn: Handler | None = None,
    *,
    ticket_key: str = "ticket",
    margin: float = 0.5,
    revalidate_after: float = 30.0,
    resolve_refs: bool = True,
    offload_result: bool = True,
    invocation: Invocation = "sync",
) -> Any:
    """Decorate ``fn(event, context, job)``, bare or with options.

    The ticket is ``event[ticket_key]`` (a Ticket, its JSON or its dict), else the environment
    variable ``POCKET_TICKET``. Every call of the job during an invocation must end ``margin``
    seconds before the invocation's deadline (PocketTimeoutError). After ``revalidate_after``
    seconds without an invocation the job's idle connections are dropped first. Markers in the
    event are resolved (``resolve_refs``) and a result over the ``invocation`` type's payload
    limit is returned by reference (``offload_result``).
    """
    if fn is None:
        return functools.partial(
            handler, ticket_key=ticket_key, margin=margin, revalidate_after=revalidate_after,
            resolve_refs=resolve_refs, offload_result=offload_result, invocation=invocation,
        )  # fmt: skip
    if not callable(fn):
        raise ConfigError("handler options are keyword arguments: @handler(margin=1.0)")

    @functools.wraps(fn)
    def wrapper(event: Any, context: Any = None, **kwargs: Any) -> Any:
        job, key = _job_for(event, ticket_key)
        _begin(job, key, revalidate_after)
        left = seconds_left(context)
        if left is not None:
            job.client.deadline.at = time.monotonic() + left - margin
        try:
            if resolve_refs:
                event = resolve(event, job)
            result = fn(event, context, job=job, **kwargs)
            if offload_result and result is not None:
                result = offload(result, job, invocation=invocation)
            return result
        finally:
            job.client.deadline.at = None
            _env.last_used[key] = time.monotonic()

    return wrapper


def _begin(job: Job, key: tuple[str, bytes], revalidate_after: float) -> None:
    """Count the invocation; after a long gap (a freeze), drop the job's idle connections."""
    with _env.lock:
        _env.cold = _env.invocations == 0
        _env.invocations += 1
    last = _env.last_used.get(key)
    if last is not None and time.monotonic() - last > revalidate_after:
        job.client.drop_idle()


def _job_for(event: Any, ticket_key: str) -> tuple[Job, tuple[str, bytes]]:
    """The job of the invocation's ticket, attached once per environment."""
    raw = event.get(ticket_key) if isinstance(event, dict) else None
    if raw is None:
        raw = os.environ.get(TICKET_ENV)
    if raw is None:
        raise ConfigError(
            f"no pocketlib ticket: the event has no {ticket_key!r} and {TICKET_ENV} is not set"
        )
    key = _env.by_text.get(raw) if isinstance(raw, str) else None
    if key is not None:  # a warm invocation with the same ticket: no parse
        return _env.jobs[key], key
    ticket = Ticket.parse(raw)
    key = (ticket.job, ticket.token)
    with _env.lock:
        job = _env.jobs.get(key)
        if job is None:
            from ..client.client import attach

            job = _env.jobs[key] = attach(ticket)
        if isinstance(raw, str):
            if len(_env.by_text) >= _TEXTS_KEPT:
                _env.by_text.clear()
            _env.by_text[raw] = key
    return job, key
