"""Storage node: one TierDriver served over TCP to many concurrent clients.

Concurrency is a thread per connection with blocking sockets: a small request costs one recv
and one send with no event-loop hops, and large values move by ``recv_into`` straight into the
tier's memory and ``sendmsg`` straight out of it, both of which release the GIL.

Guarantees kept here:

* atomic puts: a value is committed only once every byte arrived; a client that disconnects
  mid-put leaves nothing and its reserved space is given back (see :mod:`pocketlib.node.values`;
  :mod:`pocketlib.node.session` serves each connection);
* per-job namespaces with a token per job (HMAC of the job name with the node's secret);
* lifetime hints: delete-after-read in the same request, TTLs reaped in the background;
* a malformed frame closes only its own connection; every other client keeps being served.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict
from typing import Any

from .. import heap
from ..config import Address
from ..tiers.base import TierDriver
from ..transport import shut_down, tune_socket
from .conn import OP_NAMES, ConnStats
from .session import Session
from .state import NodeState

__all__ = ["StorageNode"]


class StorageNode(NodeState):
    """Serve one tier driver on ``host:port`` (port 0 picks a free port).

    Use :meth:`start` to serve from background threads, or :meth:`serve_forever` to block;
    :meth:`stop` closes every connection and the tier.
    """

    def __init__(
        self,
        tier: TierDriver,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: bytes | None = None,
        managed: bool = False,
        reap_interval: float = 0.5,
    ) -> None:
        super().__init__(tier, secret=secret, managed=managed)
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._tls = threading.local()
        self._live_stats: set[ConnStats] = set()
        self._closed_stats = ConnStats()
        self._connections_total = 0
        self._started = time.time()
        self._reap_interval = reap_interval
        self._listener = socket.create_server((host, port), backlog=1024)
        bound = self._listener.getsockname()
        self.address = Address(bound[0], bound[1])

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StorageNode:
        """Accept and serve connections from background threads."""
        heap.tune()  # frames arrive in fresh buffers: freed ones are kept for the next
        for target in (self._accept_loop, self._reap_loop):
            t = threading.Thread(target=target, name=f"pocket-node-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop` (or :meth:`stop`) is called, then stop."""
        if not self._threads:
            self.start()
        self._stop_requested.wait()
        self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (from another thread, not a signal handler)."""
        self._stop_requested.set()

    def stop(self) -> None:
        """Stop accepting, close every connection, release the tier. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._stop_requested.set()
        shut_down(self._listener, self._open_connections)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self.tier.close()

    def __enter__(self) -> StorageNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters and tier accounting, as the STATS operation returns them."""
        tier = asdict(self.tier.stats())
        with self.lock:
            every = [self._closed_stats, *self._live_stats]
            ops = {
                name: total
                for op, name in OP_NAMES.items()
                if (total := sum(st.ops[op] for st in every))
            }
            return {
                "address": str(self.address),
                "pid": os.getpid(),
                "uptime": time.time() - self._started,
                "tier": tier,
                "ops": ops,
                "bytes_in": sum(st.bytes_in for st in every),
                "bytes_out": sum(st.bytes_out for st in every),
                "errors": sum(st.errors for st in every),
                "connections": len(self._conns),
                "connections_total": self._connections_total,
                "jobs": sorted(self.jobs),
                "job_ops": _sum_job_ops(every),
                "managed": self.managed,
                "draining": self.draining,
                "map_versions": dict(self.map_versions),
            }

    # -- threads ------------------------------------------------------------------------------
    def _open_connections(self) -> list[socket.socket]:
        with self.lock:
            return list(self._conns)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            tune_socket(conn)
            with self.lock:
                self._conns.add(conn)
                self._connections_total += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self._reap_interval):
            self.tier.expire(time.time())

    def _serve(self, conn: socket.socket) -> None:
        session = Session(self, conn)
        with self.lock:
            self._live_stats.add(session.stats)
        try:
            session.run()
        finally:
            with self.lock:
                self._conns.discard(conn)
                self._live_stats.discard(session.stats)
                self._closed_stats.add(session.stats)
            with contextlib.suppress(OSError):
                conn.close()


def _sum_job_ops(every: list[ConnStats]) -> dict[str, int]:
    total: dict[str, int] = {}
    for st in every:
        for job, n in list(st.job_ops.items()):  # a snapshot: the owning thread may add keys
            total[job] = total.get(job, 0) + n
    return total
