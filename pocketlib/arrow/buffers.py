"""A stored value as an Arrow buffer: the node's own memory when the node is on this host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from ..client.job import Job

__all__ = ["arrow_buffer"]


def arrow_buffer(
    job: Job, key: str, *, free: bool = False, verify: bool = True
) -> tuple[pa.Buffer, bool]:
    """The value of ``key`` as an Arrow buffer, and whether it is the node's memory.

    From a co-located node the buffer lies at the value's address in the node's shared
    mapping and holds the lease, so the node keeps the space (even if the key is deleted or
    overwritten) until the last Arrow buffer over it is freed; otherwise it holds a copy.
    ``free`` deletes the key as it is read; ``verify`` as :meth:`Job.get_buffer`'s.
    NotFoundError if it is absent.
    """
    held = job.get_buffer(key, delete_after_read=free, verify=verify)
    view = pa.py_buffer(held.view)
    if not held.leased:  # a copy (a remote node): Arrow may own it as it is
        return view, False
    return pa.foreign_buffer(view.address, view.size, base=held), True
