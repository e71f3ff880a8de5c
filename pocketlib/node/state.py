"""What a storage node's sessions share: its jobs and their tokens, epochs and map versions.

:class:`NodeState` is the part of a node every connection reads and changes: which jobs are
open (and with which token), which opening of each is current, the newest weight map of each,
whether the node is draining, and the waiters of keys. :class:`~pocketlib.node.server.StorageNode`
adds the listener and the threads; a session needs only this, so it never imports the server.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from abc import ABC, abstractmethod
from typing import Any

from ..auth import job_token, verify
from ..errors import AccessError, TokenError, UnknownJobError
from ..tiers.base import TierDriver
from ..tiers.persist import PersistingTier
from .waits import KeyWaits

__all__ = ["NodeState"]


class NodeState(ABC):
    """The jobs, tokens, epochs and map versions of one node, under its lock."""

    def __init__(
        self, tier: TierDriver, *, secret: bytes | None = None, managed: bool = False
    ) -> None:
        self.tier = tier
        #: Whether puts may ask to be written through to a persist tier (``--persist``).
        self.persists = isinstance(tier, PersistingTier)
        self._secret = secret or secrets.token_bytes(32)
        #: Managed by a controller: tokens come only from it (JOB_OPEN is refused) and a job
        #: opens on its first request with a valid token.
        self.managed = managed
        #: Jobs deleted here while managed: their tokens stay refused (job ids are never reused).
        self.closed_jobs: set[str] = set()
        #: Set by the controller (heartbeat answer): serve reads and deletes, take no new data.
        self.draining = False
        #: Open jobs and their tokens.
        self.jobs: dict[str, bytes] = {}
        #: Which opening of each job is current: a put compares it before and after its commit.
        self.job_epochs: dict[str, int] = {}
        #: The newest weight-map version of each job the controller has told this node of:
        #: requests made under an older ticket are fenced (see :mod:`pocketlib.node.session`).
        self.map_versions: dict[str, int] = {}
        #: Readers blocked until keys exist (WAIT), woken by puts.
        self.waits = KeyWaits()
        self._epochs = itertools.count(1)
        self.lock = threading.Lock()

    def token_for(self, job: str) -> bytes:
        """The token that authenticates ``job`` on this node."""
        return job_token(self._secret, job)

    def open_job(self, job: str) -> bytes:
        """Open ``job`` here (idempotent); returns its token. Refused on a managed node."""
        if self.managed:
            raise AccessError("this node is managed by a controller: register the job there")
        return self._open(job)

    def _open(self, job: str) -> bytes:
        token = self.token_for(job)
        with self.lock:
            if job not in self.jobs:
                self.jobs[job] = token
                self.job_epochs[job] = next(self._epochs)
        return token

    def admit(self, job: str, token: bytes) -> None:
        """A request for ``job``, which is not open here: open it if the token is valid.

        Only a managed node does; a node in direct mode knows only jobs opened with JOB_OPEN.
        """
        if not self.managed:
            raise UnknownJobError(f"job {job!r} is not open on this node")
        expected = self.token_for(job)
        if not verify(token, expected):
            raise TokenError(f"wrong token for job {job!r}")
        with self.lock:  # one step with delete_job: a deleted job is never reopened
            if job in self.closed_jobs:
                raise UnknownJobError(f"job {job!r} was deregistered")
            if job not in self.jobs:
                self.jobs[job] = expected
                self.job_epochs[job] = next(self._epochs)

    def learn_map_version(self, job: str, version: int) -> None:
        """``job`` has a weight map of ``version`` (never goes back a version)."""
        with self.lock:
            if version <= self.map_versions.get(job, 0):
                return
            self.map_versions[job] = version
        self.waits.job_changed(job)

    def delete_job(self, job: str) -> int:
        """Close ``job`` and free all its objects; returns how many there were."""
        with self.lock:
            self.jobs.pop(job, None)
            self.job_epochs.pop(job, None)
            if self.managed:
                self.closed_jobs.add(job)
        # Outside the lock: freeing a large job (or one on S3) must not stall every put.
        # A put that commits meanwhile sees the epoch change and removes what it stored.
        return self.tier.delete_job(job)

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters and tier accounting, as the STATS operation returns them."""
