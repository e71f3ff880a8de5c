"""The node's half of the co-located path: leases and reservations handed to a local client.

A client on the same host as a DRAM or NVMe node maps the tier's file itself (see
:mod:`pocketlib.client.shared`) and asks the node only for *where* a value is: SHM_GET answers with
the value's extents and keeps a lease on it, so its space is not reused until the client sends
SHM_RELEASE (or its connection closes); SHM_RESERVE answers with the extents of fresh space the
client fills before SHM_COMMIT makes it visible. Small values are answered inline, as a GET
would be: for them one round trip beats a copy out of shared memory plus a release.

The mapping holds every job's data, so this path is offered only to clients that can open the
tier's file, i.e. processes of the node's own user on its host, which could read the file
anyway; jobs still need their token for every request, as on the TCP path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..bodies import encode_extents, encode_json
from ..errors import RequestError
from ..protocol import MAGIC, RESPONSE_HEADER, VERSION, Flag, Op, RequestHeader, encode_response
from ..tiers.base import Lease, Reservation
from ..tiers.mapped import MappedTier
from ..transport import boot_id
from .batches import SharedLeases, multi_get

if TYPE_CHECKING:
    from .values import ValueSession

__all__ = ["SharedSession"]

#: Values up to this size are sent inline in answer to SHM_GET.
INLINE_LIMIT = 64 * 1024
_pack_response = RESPONSE_HEADER.pack


class SharedSession:
    """The leases and reservations one connection holds through the shared mapping."""

    def __init__(self, session: ValueSession) -> None:
        self.session = session
        #: What this connection holds, by the id of the request that took it: a value's
        #: lease (SHM_GET), a MULTI_GET's leases, or fresh space (SHM_RESERVE).
        self.held: dict[int, Lease | list[Lease] | Reservation] = {}
        self._share = SharedLeases(INLINE_LIMIT, self._hold)

    def handle(self, h: RequestHeader, job: str, key: str) -> None:
        """Serve MAP_INFO, SHM_GET, SHM_RELEASE, SHM_RESERVE or SHM_COMMIT."""
        s = self.session
        tier = s.tier
        op = h.op
        if op == Op.MAP_INFO:
            info = {}
            if isinstance(tier, MappedTier) and tier.shared_path is not None:
                st = os.stat(tier.shared_path)
                info = {
                    "path": tier.shared_path, "size": tier.capacity, "dev": st.st_dev,
                    "ino": st.st_ino, "boot_id": boot_id(),
                }  # fmt: skip
            body = encode_json(info)
            s.conn.sendall(encode_response(h.request_id, length=len(body)) + body)
            return
        if op == Op.SHM_RELEASE:  # one-way: never answered
            held = self.held.pop(h.arg, None)
            if held is not None:
                self._give_back(held)
            return
        if not (isinstance(tier, MappedTier) and tier.shared_path is not None):
            raise RequestError("this node's tier is not in shared memory")
        if not key and op != Op.SHM_RESERVE:
            raise RequestError("keys must not be empty")
        if op == Op.SHM_GET:
            self.get(h, job, key)
        elif op == Op.SHM_RESERVE:
            fresh = tier.reserve(h.length)
            self.held[h.request_id] = fresh
            self._reply_extents(h.request_id, fresh.loc, 0, fresh.size, 0, 0)
        elif op == Op.SHM_COMMIT:
            held = self.held.pop(h.arg, None)
            if not isinstance(held, Reservation):
                if held is not None:
                    self.held[h.arg] = held  # a lease: not ours to commit
                raise RequestError(f"no reservation {h.arg} on this connection")
            res = held
            if res.size != h.length:
                tier.abort(res)
                raise RequestError(f"reservation {h.arg} is {res.size} bytes, not {h.length}")
            replaced = s.striped_value(job, key) if h.flags & Flag.REPLACED else None
            meta = s.commit(
                res, job, key, checksum=h.checksum, flags=h.flags & Flag.STORED,
                ttl=h.ttl_ms / 1000 if h.ttl_ms else None, map_version=h.map_version,
            )  # fmt: skip
            if replaced is not None:  # as for PUT: the manifest it replaced, for its chunks
                s.conn.sendall(encode_response(
                    h.request_id, flags=Flag.STRIPED, length=len(replaced), size=meta.size,
                    version=meta.version,
                ) + replaced)  # fmt: skip
            else:
                s.conn.sendall(encode_response(h.request_id, size=meta.size, version=meta.version))
            s.stats.bytes_in += meta.size

    def get(self, h: RequestHeader, job: str, key: str) -> None:
        """SHM_GET: a small value inline, as GET answers; a larger one as leased extents."""
        s = self.session
        if not isinstance(s.tier, MappedTier) or s.tier.shared_path is None:
            raise RequestError("this node's tier is not in shared memory")
        take = bool(h.flags & Flag.DELETE_AFTER_READ)
        small = s.tier.read_small(job, key, INLINE_LIMIT, take=take)
        if small is not None:
            meta, data = small
            head = _pack_response(
                MAGIC, VERSION, 0, meta.flags, 0, h.request_id, 0, meta.size, meta.checksum,
                meta.size, meta.version,
            )  # fmt: skip
            s.conn.sendall(head + data)
            return
        lease = s.tier.lease(job, key, take=take)
        self.held[h.request_id] = lease
        m = lease.meta
        self._reply_extents(h.request_id, lease.loc, m.flags | Flag.SHARED, m.size, m.checksum,
                            m.version)  # fmt: skip
        s.stats.bytes_out += m.size

    def multi_get(self, h: RequestHeader, job: str, body: bytes) -> None:
        """MULTI_GET with flag SHARED: values above :data:`INLINE_LIMIT` answered as extents
        and leased until SHM_RELEASE of the request's id; a MULTI_GET as any other where the
        tier is not in shared memory (the client then finds no SHARED entry)."""
        s = self.session
        mapped = isinstance(s.tier, MappedTier) and s.tier.shared_path is not None
        multi_get(s, h, job, body, self._share if mapped else None)

    def _hold(self, request_id: int, leases: list[Lease]) -> None:
        old = self.held.pop(request_id, None)
        if old is not None:  # a client reusing an id it has not released: the older goes
            self._give_back(old)
        self.held[request_id] = leases

    def _give_back(self, held: Lease | list[Lease] | Reservation) -> None:
        if isinstance(held, Lease):
            held.release()
        elif isinstance(held, list):
            for lease in held:
                lease.release()
        else:
            self.session.tier.abort(held)

    def _reply_extents(
        self,
        request_id: int,
        extents: list[tuple[int, int]],
        flags: int,
        size: int,
        checksum: int,
        version: int,
    ) -> None:
        body = encode_extents(extents)
        head = _pack_response(
            MAGIC, VERSION, 0, flags, 0, request_id, 0, len(body), checksum, size, version
        )
        self.session.conn.sendall(head + body)

    def close(self) -> None:
        """Give back everything the connection still holds (it closed or broke)."""
        for held in self.held.values():
            self._give_back(held)
        self.held.clear()
