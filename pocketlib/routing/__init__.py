"""Key placement: weighted rendezvous hashing over a job's versioned weight maps. Pure; no I/O."""

from .rendezvous import SLOTS, WeightedRendezvous, slot_of
from .weightmap import VersionedRouter, WeightMap

__all__ = ["SLOTS", "VersionedRouter", "WeightMap", "WeightedRendezvous", "slot_of"]
