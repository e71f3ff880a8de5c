"""Weighted rendezvous (highest random weight) hashing over a slot table.

Each (input, node) pair gets a pseudo-random score ``-w / ln(u)``, with ``u`` uniform in
(0, 1) from a hash of the input seeded by the node; the input belongs to the node with the
highest score. That gives each node a share proportional to its weight and moves only what
must move when a node joins or leaves (what that node wins or loses).

Scoring every node for every key costs one hash and one logarithm per node (~20 µs at 64
nodes). So a key is first hashed to one of ``SLOTS`` slots, and the rendezvous runs over the
slot instead of the key, once per slot, the first time the slot is used; the answer is cached.
A warmed lookup is one hash and one list index. Shares and movement keep the properties above,
at the granularity of slots (1 / 16,384 of the keys each).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import xxhash

__all__ = ["SLOTS", "WeightedRendezvous", "slot_of"]

SLOTS = 16_384
"""Slots in the table; a power of two so that a key's slot is a mask of its hash."""

_MASK = SLOTS - 1
_TWO53 = float(1 << 53)

# (name, seed, weight): a node as the scoring loop wants it.
_Node = tuple[str, int, float]


def slot_of(key: bytes) -> int:
    """The slot of ``key``: its xxh64 (seed 0) masked to ``SLOTS``."""
    return xxhash.xxh64_intdigest(key) & _MASK


def _slot_input(slot: int) -> bytes:
    """What the rendezvous of ``slot`` hashes (fixed width and byte order: the same bytes in
    every process and on every machine)."""
    return slot.to_bytes(4, "little")


def _prepare(weights: Mapping[str, float]) -> list[_Node]:
    """Validate ``weights`` and return the nodes sorted by name with their hash seeds."""
    if not weights:
        raise ValueError("a weight map needs at least one node")
    if any(not (w > 0 and math.isfinite(w)) for w in weights.values()):
        raise ValueError("weights must be positive and finite")
    # Sorted so that ties (practically impossible with 64-bit hashes) break the same way in
    # every process, whatever the insertion order of ``weights``.
    return [
        (node, xxhash.xxh64_intdigest(node.encode()), float(w))
        for node, w in sorted(weights.items())
    ]


def _score_all(nodes: Sequence[_Node], data: bytes, *, equal: bool = False) -> str:
    """The full weighted rendezvous of ``data`` over ``nodes``: every node scored.

    Used for each slot the first time it is touched, and kept callable on a key so that tests
    and benchmarks can compare the slot table with scoring every key (the former algorithm).
    ``equal`` says every weight is the same, where the order of the scores is that of ``u``.
    """
    digest = xxhash.xxh64_intdigest
    if equal:
        return max(nodes, key=lambda n: digest(data, n[1]))[0]
    best, best_score = nodes[0][0], -1.0
    for node, seed, weight in nodes:
        # The top 53 bits, so that u is exact and strictly inside (0, 1): with all 64 bits,
        # a digest near 2**64 rounds to u == 1.0 and ln(u) == 0.
        u = ((digest(data, seed) >> 11) + 0.5) / _TWO53
        score = -weight / math.log(u)
        if score > best_score:
            best, best_score = node, score
    return best


class WeightedRendezvous:
    """Route keys to nodes in proportion to their weights.

    Immutable after construction apart from the slot cache, which only ever goes from ``None``
    to the one answer a slot has.

    >>> r = WeightedRendezvous({"a:1": 1.0, "b:2": 1.0})
    >>> r.node_for(b"some-key") in ("a:1", "b:2")
    True
    """

    __slots__ = ("_equal", "_nodes", "_only", "_table", "weights")

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._nodes = _prepare(weights)
        self.weights = {node: w for node, _, w in self._nodes}
        self._equal = len(set(self.weights.values())) == 1
        self._only = self._nodes[0][0] if len(self._nodes) == 1 else None
        # Filled lazily: most jobs touch a fraction of the slots, and a router is built per
        # weight-map version. No lock: two threads racing on a slot compute and store the
        # same string (the rendezvous is a pure function of the slot and the weights), and a
        # list item store is atomic, so either write is the answer.
        self._table: list[str | None] = [None] * SLOTS

    @classmethod
    def uniform(cls, nodes: Iterable[str]) -> WeightedRendezvous:
        """Equal weights: the direct mode over fixed nodes."""
        return cls(dict.fromkeys(nodes, 1.0))

    @property
    def nodes(self) -> list[str]:
        """Node names in a stable (sorted) order."""
        return [n for n, _, _ in self._nodes]

    def to_dict(self) -> dict[str, float]:
        """The weights, sorted by node name (JSON-friendly)."""
        return dict(self.weights)

    def node_for(self, key: bytes) -> str:
        """The node that holds ``key``."""
        if self._only is not None:
            return self._only
        slot = xxhash.xxh64_intdigest(key) & _MASK
        node = self._table[slot]
        if node is None:
            return self._fill(slot)
        return node

    def node_for_slot(self, slot: int) -> str:
        """The node that owns ``slot`` (``0 <= slot < SLOTS``), computed and cached on first
        use."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} is outside 0..{SLOTS - 1}")
        node = self._table[slot]
        return self._fill(slot) if node is None else node

    def _fill(self, slot: int) -> str:
        node = _score_all(self._nodes, _slot_input(slot), equal=self._equal)
        self._table[slot] = node
        return node

    def __repr__(self) -> str:
        return f"WeightedRendezvous({self.weights!r})"
