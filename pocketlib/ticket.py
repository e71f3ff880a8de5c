"""The ticket: everything a serverless function needs to use a job, in a few hundred bytes.

A driver registers a job with the controller and passes ``job.ticket`` (or its JSON text) to
each function; ``pocketlib.attach(ticket)`` inside the function needs no controller round trip.
The ticket holds the job's id and token, every weight-map version (keyed by node address), the
stripe size for large objects, the nodes known lost, and the controller's address (for a
refresh when a node is lost or the job's allocation grows).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .routing.weightmap import WeightMap

__all__ = ["DEFAULT_STRIPE_SIZE", "UNSTRIPED", "Ticket"]

#: Values larger than this are split into chunks that route independently.
DEFAULT_STRIPE_SIZE = 8 * 1024 * 1024
#: A stripe size no value reaches: striping off.
UNSTRIPED = 1 << 62


@dataclass(frozen=True)
class Ticket:
    """A job's credentials and placement; serializable, immutable."""

    #: The job id (``name-<random>``): the namespace on every node, never reused.
    job: str
    #: The name the job was registered under.
    name: str
    token: bytes
    #: Weight maps over node addresses, oldest first.
    maps: tuple[WeightMap, ...]
    stripe_size: int = DEFAULT_STRIPE_SIZE
    #: Addresses of nodes the controller knows are gone (their data is lost).
    lost: frozenset[str] = field(default_factory=frozenset)
    #: Addresses of nodes drained and stopped once they held none of the job's data.
    retired: frozenset[str] = field(default_factory=frozenset)
    #: The controller's address, or None (no refresh possible).
    controller: str | None = None

    def __post_init__(self) -> None:
        if not self.job or not self.maps:
            raise ConfigError("a ticket needs a job id and at least one weight map")
        if self.stripe_size < 4096:
            raise ConfigError(f"stripe size {self.stripe_size} is below 4 KiB")
        versions = [m.version for m in self.maps]
        if any(b <= a for a, b in itertools.pairwise(versions)):
            raise ConfigError(f"not a pocketlib ticket: map versions {versions} do not increase")

    @property
    def version(self) -> int:
        """The newest weight-map version."""
        return self.maps[-1].version

    @property
    def nodes(self) -> list[str]:
        """Every node address of every version."""
        return sorted({node for m in self.maps for node in m.weights})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "job": self.job,
            "name": self.name,
            "token": self.token.hex(),
            "maps": [m.as_dict() for m in self.maps],
            "stripe_size": self.stripe_size,
            "lost": sorted(self.lost),
            "retired": sorted(self.retired),
            "controller": self.controller,
        }

    def to_json(self) -> str:
        """Compact JSON text (what a driver passes to its functions)."""
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ticket:
        """Inverse of :meth:`as_dict`; ConfigError on anything malformed."""
        try:
            return cls(
                job=str(data["job"]),
                name=str(data.get("name", data["job"])),
                token=bytes.fromhex(data["token"]),
                maps=tuple(WeightMap.from_dict(m) for m in data["maps"]),
                stripe_size=int(data.get("stripe_size", DEFAULT_STRIPE_SIZE)),
                lost=frozenset(data.get("lost", ())),
                retired=frozenset(data.get("retired", ())),
                controller=data.get("controller"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"not a pocketlib ticket: {exc}") from exc

    @classmethod
    def parse(cls, value: Ticket | str | bytes | Mapping[str, Any]) -> Ticket:
        """A ticket from itself, its JSON text or its dict."""
        if isinstance(value, Ticket):
            return value
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"not a pocketlib ticket: {exc}") from exc
        if not isinstance(value, Mapping):
            raise ConfigError(f"not a pocketlib ticket: {type(value).__name__}")
        return cls.from_dict(value)

    def __repr__(self) -> str:  # the token stays out of logs
        return f"<Ticket {self.job!r} v{self.version} on {len(self.nodes)} node(s)>"
