"""Weighted rendezvous (highest random weight) hashing.

Each (key, node) pair gets a pseudo-random score; the key lives on the node with the highest
score. With weights, the score is ``-w / ln(u)`` for ``u`` uniform in (0, 1) from the hash,
which gives each node a share of keys proportional to its weight, and moves only the keys
that must move when a node joins or leaves (those won or lost by that node).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import xxhash

__all__ = ["WeightedRendezvous"]

_TWO64 = float(1 << 64)


def _node_seed(node: str) -> int:
    return xxhash.xxh64_intdigest(node.encode())


class WeightedRendezvous:
    """Route keys to nodes in proportion to their weights.

    >>> r = WeightedRendezvous({"a:1": 1.0, "b:2": 1.0})
    >>> r.node_for(b"some-key") in ("a:1", "b:2")
    True
    """

    __slots__ = ("_equal", "_nodes", "weights")

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights:
            raise ValueError("a weight map needs at least one node")
        if any(not (w > 0 and math.isfinite(w)) for w in weights.values()):
            raise ValueError("weights must be positive and finite")
        self.weights = dict(weights)
        # Sorted so that ties (practically impossible with 64-bit hashes) break the same way
        # in every process.
        self._nodes = [(node, _node_seed(node), float(w)) for node, w in sorted(weights.items())]
        self._equal = len(set(self.weights.values())) == 1

    @classmethod
    def uniform(cls, nodes: list[str]) -> WeightedRendezvous:
        """Equal weights: the direct mode over fixed nodes."""
        return cls(dict.fromkeys(nodes, 1.0))

    @property
    def nodes(self) -> list[str]:
        """Node names in a stable order."""
        return [n for n, _, _ in self._nodes]

    def node_for(self, key: bytes) -> str:
        """The node that holds ``key``."""
        nodes = self._nodes
        if len(nodes) == 1:
            return nodes[0][0]
        digest = xxhash.xxh64_intdigest
        if self._equal:
            # With equal weights the ordering of -w/ln(u) is that of u itself.
            return max(nodes, key=lambda n: digest(key, n[1]))[0]
        best, best_score = nodes[0][0], -1.0
        for node, seed, weight in nodes:
            u = (digest(key, seed) + 0.5) / _TWO64
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = node, score
        return best
