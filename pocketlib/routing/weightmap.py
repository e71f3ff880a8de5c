"""Versioned weight maps, and routing over all of a job's versions. Pure; no I/O.

A weight map never changes under data: when a job's nodes change, the controller adds version
*n+1*. Writes route by the newest map; a key written under an older map is still found,
because reads try the newest map's node first and then each older version's node for the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from .rendezvous import WeightedRendezvous

__all__ = ["VersionedRouter", "WeightMap"]

# Weights already summing to 1 within this are kept as they are, so that normalising is
# idempotent: a map read back from as_dict() has bit-for-bit the weights it was written with
# (dividing again by a sum of 0.9999999999999999 would move the last bits).
_SUM_TOLERANCE = 1e-9


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` scaled to sum to 1 and sorted by node name; ValueError if invalid."""
    if not weights:
        raise ValueError("a weight map needs at least one node")
    for node, w in weights.items():
        if not isinstance(node, str) or not node:
            raise ValueError(f"node names must be non-empty strings, not {node!r}")
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise ValueError(f"weight of {node!r} must be a number, not {w!r}")
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(f"weight of {node!r} must be positive and finite, not {w!r}")
    items = sorted((node, float(w)) for node, w in weights.items())
    top = max(w for _, w in items)
    # (top <= 1: a sum of huge weights would overflow fsum.)
    if top <= 1.0 and abs(math.fsum(w for _, w in items) - 1.0) <= _SUM_TOLERANCE:
        return dict(items)
    # Divided by the largest first, so that a sum of huge weights cannot overflow to inf.
    scaled = [(node, w / top) for node, w in items]
    total = math.fsum(w for _, w in scaled)
    out = {node: w / total for node, w in scaled}
    for node, w in out.items():
        if w <= 0.0:
            raise ValueError(f"weight of {node!r} is too small next to the others to represent")
    return out


@dataclass(frozen=True)
class WeightMap:
    """One version of a job's weights over nodes, normalised to sum to 1.

    ``weights`` is read-only and sorted by node name. Equal maps compare equal; the hash is
    the version's (the weights are a mapping).
    """

    version: int
    weights: Mapping[str, float] = field(hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ValueError(f"version must be an int, not {self.version!r}")
        if self.version < 1:
            raise ValueError(f"version must be >= 1, not {self.version}")
        # object.__setattr__: the dataclass is frozen, and this is still its construction.
        object.__setattr__(self, "weights", MappingProxyType(_normalise(self.weights)))

    @cached_property
    def router(self) -> WeightedRendezvous:
        """The router of this map, built on first use (a race builds two equal ones)."""
        return WeightedRendezvous(self.weights)

    @property
    def nodes(self) -> list[str]:
        """Node names, sorted."""
        return list(self.weights)

    def as_dict(self) -> dict[str, Any]:
        """``{"version": int, "weights": {node: float}}``, ready for ``json.dumps``."""
        return {"version": self.version, "weights": dict(self.weights)}

    def __reduce__(self) -> tuple[type[WeightMap], tuple[int, dict[str, float]]]:
        # By value: a read-only mapping (and the cached router) does not pickle, and need not.
        return (WeightMap, (self.version, dict(self.weights)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightMap:
        """The inverse of :meth:`as_dict`; ValueError on a malformed mapping."""
        try:
            version, weights = data["version"], data["weights"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"a weight map needs 'version' and 'weights': {data!r}") from e
        if not isinstance(weights, Mapping):
            raise ValueError(f"'weights' must be a mapping, not {weights!r}")
        return cls(version, weights)


class VersionedRouter:
    """Routing over every weight-map version of a job, oldest to newest.

    >>> r = VersionedRouter([WeightMap(1, {"a": 1.0}), WeightMap(2, {"a": 1.0, "b": 1.0})])
    >>> r.write_node(b"k") == r.read_nodes(b"k")[0]
    True
    """

    __slots__ = ("_newest", "_newest_first", "maps")

    def __init__(self, maps: Sequence[WeightMap]) -> None:
        if not maps:
            raise ValueError("a versioned router needs at least one weight map")
        for older, newer in pairwise(maps):
            if newer.version <= older.version:
                raise ValueError(
                    f"weight-map versions must increase strictly: {older.version} then "
                    f"{newer.version}"
                )
        self.maps: tuple[WeightMap, ...] = tuple(maps)
        self._newest = self.maps[-1].router
        self._newest_first = tuple(m.router for m in reversed(self.maps))

    @property
    def newest(self) -> WeightMap:
        """The map that writes use."""
        return self.maps[-1]

    @property
    def nodes(self) -> list[str]:
        """Every node of every version, sorted (a node that left is still read from)."""
        return sorted({node for m in self.maps for node in m.weights})

    def write_node(self, key: bytes) -> str:
        """The node to write ``key`` to: its node under the newest map."""
        return self._newest.node_for(key)

    def read_nodes(self, key: bytes) -> list[str]:
        """The distinct nodes that may hold ``key``, newest version first."""
        out: list[str] = []
        for router in self._newest_first:
            node = router.node_for(key)
            if node not in out:
                out.append(node)
        return out

    def with_map(self, m: WeightMap) -> VersionedRouter:
        """A new router with ``m`` as its newest version (this one is unchanged)."""
        return VersionedRouter((*self.maps, m))

    def __repr__(self) -> str:
        return f"VersionedRouter(versions={[m.version for m in self.maps]})"
