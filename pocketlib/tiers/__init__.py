"""Tier drivers: the storage media a node can serve (DRAM today; NVMe, HDD and S3 to come)."""

from .base import (
    Capabilities,
    Lease,
    ObjectMeta,
    Reservation,
    TierDriver,
    TierStats,
    available_drivers,
    load_driver,
)

__all__ = [
    "Capabilities",
    "Lease",
    "ObjectMeta",
    "Reservation",
    "TierDriver",
    "TierStats",
    "available_drivers",
    "load_driver",
]
