"""Key placement: weighted rendezvous hashing over a job's weight map. Pure; no I/O."""

from .rendezvous import WeightedRendezvous

__all__ = ["WeightedRendezvous"]
