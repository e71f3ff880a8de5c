"""Waiting on a node until keys exist: readers of a shuffle block here instead of polling.

A WAIT request names keys of a job and a timeout; the node answers when every one of them is
stored, when the timeout passes, or when the job's weight map changes (the waiter's ticket may
then route some key elsewhere, and its next request is fenced until it refreshes). Puts wake the
waiters of their key; a node with no waiters pays one truth test per put.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["KeyWaits"]


class KeyWaits:
    """Waiters by (job, key), woken by the puts that store their key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], list[threading.Event]] = {}
        self._by_job: dict[str, set[threading.Event]] = {}

    def stored(self, job: str, key: str) -> None:
        """A put of ``key`` committed: wake whoever waits for it."""
        if not self._waiters:  # (read without the lock: a waiter re-checks after registering)
            return
        with self._lock:
            events = self._waiters.pop((job, key), ())
        for event in events:
            event.set()

    def job_changed(self, job: str) -> None:
        """The job's weight map changed: wake all its waiters (they answer, and their clients
        refresh before asking again)."""
        with self._lock:
            events = list(self._by_job.get(job, ()))
        for event in events:
            event.set()

    def wait(
        self,
        job: str,
        keys: Sequence[str],
        exists: Callable[[str], bool],
        timeout: float,
        interrupted: Callable[[], bool],
    ) -> list[str]:
        """Block until every key ``exists``, ``timeout`` seconds pass or ``interrupted()``;
        the keys still missing."""
        deadline = time.monotonic() + timeout
        missing = [k for k in keys if not exists(k)]
        while missing and not interrupted():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = threading.Event()
            registered = list(missing)
            with self._lock:
                for key in registered:
                    self._waiters.setdefault((job, key), []).append(event)
                self._by_job.setdefault(job, set()).add(event)
            try:
                # Registered first, checked again: a put between the two checks is not missed.
                missing = [k for k in missing if not exists(k)]
                if missing:
                    event.wait(left)
                    missing = [k for k in missing if not exists(k)]
            finally:
                self._forget(job, registered, event)
        return missing

    def _forget(self, job: str, keys: list[str], event: threading.Event) -> None:
        with self._lock:
            for key in keys:
                events = self._waiters.get((job, key))
                if events is not None and event in events:  # (a put may have taken them)
                    events.remove(event)
                    if not events:
                        del self._waiters[(job, key)]
            waiting = self._by_job.get(job)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._by_job[job]
