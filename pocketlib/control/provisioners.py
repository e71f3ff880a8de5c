"""Provisioners start and stop storage nodes for the controller.

A provisioner only launches a node and later removes it; it never waits for the node to
serve. A launched node registers itself with the controller (``pocket node --controller``),
naming itself with the handle the provisioner gave it, so the controller links the two. The
controller therefore never blocks while nodes start.

* :class:`LocalProvisioner`: nodes as child processes of this one (the embedded default).
* :class:`pocketlib.control.kubernetes.KubernetesProvisioner`: storage-node pods.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..config import Address
from .processes import NodeProcess

__all__ = ["LocalProvisioner", "NodeSpec", "Provisioner"]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What kind of node to start."""

    tier: str
    #: Bytes the node's tier holds.
    capacity: int
    #: The node's network bandwidth in bytes/s (what the controller allocates against).
    bandwidth: int
    #: Directory for file-backed tiers (nvme, hdd); None for a private temporary one.
    path: str | None = None


class Provisioner(ABC):
    """Launches and removes storage nodes; every call returns without waiting for a node."""

    #: Short name used in logs and ``pocket status``.
    name: str = "provisioner"

    @abstractmethod
    def start_node(self, spec: NodeSpec, controller: Address, secret: str) -> str:
        """Launch a node that will register with ``controller``; returns its handle.

        The handle is unique among this provisioner's nodes and is the name the node registers
        under (``pocket node --name HANDLE``). Raises PocketError if it cannot even launch.
        """

    @abstractmethod
    def stop_node(self, handle: str) -> None:
        """Remove the node ``handle`` (idempotent; an unknown handle is ignored)."""

    @abstractmethod
    def handles(self) -> list[str]:
        """Handles of the nodes this provisioner launched and has not removed."""

    def close(self) -> None:
        """Remove every node this provisioner launched."""
        for handle in self.handles():
            self.stop_node(handle)


class LocalProvisioner(Provisioner):
    """Nodes as child processes on this machine, stopped by the PIDs it started."""

    name = "local"

    def __init__(
        self, host: str = "127.0.0.1", extra_args: tuple[str, ...] = (),
        *, data_dir: str | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.extra_args = extra_args
        #: File-backed tiers get a directory each under this one (removed with the node).
        self.data_dir = data_dir
        self._own_data_dir = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._launchers: list[threading.Thread] = []
        self._nodes: dict[str, NodeProcess | None] = {}  # None: still starting

    def start_node(self, spec: NodeSpec, controller: Address, secret: str) -> str:
        handle = f"local-{spec.tier}-{next(self._ids)}"
        args = [
            "--controller", str(controller), "--name", handle,
            "--bandwidth", str(spec.bandwidth), "--exit-with-parent", *self.extra_args,
        ]  # fmt: skip
        if spec.path:
            args += ["--path", spec.path]
        elif spec.tier in ("nvme", "hdd"):
            args += ["--path", self._node_dir(handle)]
        # Starting a process takes a fraction of a second: do it off the caller's thread.
        launcher = threading.Thread(
            target=self._launch, args=(handle, spec, args, secret), daemon=True
        )
        with self._lock:
            self._nodes[handle] = None
            self._launchers = [t for t in self._launchers if t.is_alive()] + [launcher]
        launcher.start()
        return handle

    def _launch(self, handle: str, spec: NodeSpec, args: list[str], secret: str) -> None:
        try:
            proc = NodeProcess(
                spec.tier, spec.capacity, host=self.host, extra_args=args,
                env={"POCKET_SECRET": secret},
            )  # fmt: skip
        except Exception:
            with self._lock:
                self._nodes.pop(handle, None)
            return
        with self._lock:
            if handle in self._nodes:
                self._nodes[handle] = proc
                return
        proc.stop()  # stopped while it was starting

    def _node_dir(self, handle: str) -> str:
        with self._lock:
            if self.data_dir is None:
                self.data_dir = tempfile.mkdtemp(prefix="pocket-nodes-")
                self._own_data_dir = True
        return f"{self.data_dir}/{handle}"

    def stop_node(self, handle: str) -> None:
        with self._lock:
            proc = self._nodes.pop(handle, None)
        if proc is not None:
            proc.stop()
        if self.data_dir is not None:  # ephemeral by design: the node's files go with it
            shutil.rmtree(f"{self.data_dir}/{handle}", ignore_errors=True)

    def close(self) -> None:
        super().close()
        # Nodes still starting stop themselves once launched (their handles are gone); wait
        # for that, or a process exiting right after close() would orphan them.
        with self._lock:
            launchers, self._launchers = self._launchers, []
        for launcher in launchers:
            launcher.join(timeout=60)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill_node(self, handle: str) -> None:
        """SIGKILL a node (tests of lost nodes)."""
        with self._lock:
            proc = self._nodes.get(handle)
        if proc is not None:
            proc.kill()

    def handles(self) -> list[str]:
        with self._lock:
            return list(self._nodes)
