"""Storage nodes as Kubernetes pods: :class:`KubernetesProvisioner`.

One pod per node, created in one API call and never waited for: the pod's ``pocket node``
registers with the controller by itself, under the pod's name (the handle). The cluster secret
reaches the pods through a Kubernetes Secret (:meth:`KubernetesProvisioner.ensure_secret`),
never through the pod spec. docs/kubernetes.md describes the pods; deploy/ holds the manifests.

The ``kubernetes`` client is imported here only, so ``import pocketlib`` stays light; it comes
with ``pip install 'pocketlib[k8s]'``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Address
from ..errors import ConfigError, ConnectError, PocketError, ServerError
from .provisioners import NodeSpec, Provisioner

__all__ = ["KubernetesProvisioner", "PodResources"]

_MiB = 1 << 20
#: Label keys; the managed-by and instance labels are how handles() finds this controller's pods.
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
TIER_LABEL = "pocketlib/tier"
#: Tiers whose node keeps its data in a directory (``--path``); the pod mounts one at /data.
FILE_TIERS = frozenset({"nvme", "hdd"})
DATA_DIR = "/data"
#: Room in /dev/shm beyond the arena: the DRAM tier refuses to start unless /dev/shm has the
#: whole capacity free, and small files (Python's semaphores) may share the mount.
SHM_SLACK = 16 * _MiB
_TIER_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_HANDLE_RE = re.compile(r"^pocket-[a-z0-9-]+-[0-9a-f]{6}$")


def _import_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise ConfigError(
            "the kubernetes provisioner needs the kubernetes client: pip install 'pocketlib[k8s]'"
        ) from exc
    return kubernetes


@dataclass(frozen=True, slots=True)
class PodResources:
    """CPU and memory of one tier's pods; a DRAM pod's memory adds its arena to the overhead."""

    cpu_request: str = "1"
    #: None: no CPU limit, because CFS throttling turns into latency spikes for every client.
    cpu_limit: str | None = None
    #: Memory for the node process itself (Python, buffers, connections), in bytes.
    memory_overhead: int = 512 * _MiB


class KubernetesProvisioner(Provisioner):
    """Starts and stops storage-node pods in one namespace through the Kubernetes API."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str = "pocket",
        image: str = "pocketlib:latest",
        *,
        api: Any = None,
        secret_name: str = "pocket-secret",
        service_account: str | None = None,
        labels: Mapping[str, str] | None = None,
        port: int = 7000,
        resources: Mapping[str, PodResources] | None = None,
        node_selector: Mapping[str, Mapping[str, str]] | None = None,
        host_paths: Mapping[str, str] | None = None,
        instance: str = "pocket",
        image_pull_policy: str = "IfNotPresent",
        grace_period: int = 5,
        timeout: float = 30.0,
    ) -> None:
        """``api`` is a ``kubernetes.client.CoreV1Api``; by default one is built from the
        in-cluster service account, else from ~/.kube/config.

        ``resources``, ``node_selector`` and ``host_paths`` are keyed by tier. A tier in
        ``host_paths`` (nvme, hdd) keeps its data in that directory of the machine, one
        subdirectory per pod, instead of an emptyDir. ``instance`` tells apart the pods of two
        controllers sharing a namespace. ``image_pull_policy`` defaults to IfNotPresent so
        that an image loaded into kind under ``:latest`` is used as it is.
        """
        kubernetes = _import_kubernetes()
        import urllib3

        self._api_exception: type[Exception] = kubernetes.client.ApiException
        self._http_error: type[Exception] = urllib3.exceptions.HTTPError
        self._owns_api = api is None
        self.api: Any = api if api is not None else _load_api(kubernetes)
        self.namespace = namespace
        self.image = image
        self.secret_name = secret_name
        self.service_account = service_account
        self.port = port
        self.instance = instance
        self.image_pull_policy = image_pull_policy
        self.grace_period = grace_period
        self.timeout = timeout
        self.resources = dict(resources or {})
        self.node_selector = {tier: dict(sel) for tier, sel in (node_selector or {}).items()}
        self.host_paths = dict(host_paths or {})
        # Ours last: handles() depends on them, so extra labels cannot override them.
        self.labels = {
            **(labels or {}),
            NAME_LABEL: "pocket-node",
            MANAGED_LABEL: "pocketlib",
            INSTANCE_LABEL: instance,
        }
        self._lock = threading.Lock()
        self._secret_stored: str | None = None

    # -- the Provisioner interface ------------------------------------------------------------

    def start_node(self, spec: NodeSpec, controller: Address, secret: str) -> str:
        """Create the node's pod and return its name; the pod is not waited for."""
        if not _TIER_RE.match(spec.tier):
            raise ConfigError(f"tier {spec.tier!r} cannot be part of a pod name")
        _check_reachable(controller)
        with self._lock:
            stored = self._secret_stored == secret
        if not stored:  # the pods read the secret from the Secret: it must hold this one
            self.ensure_secret(secret)
        for _ in range(3):  # a name already taken (1 in 16M) is retried under another
            handle = f"pocket-{spec.tier}-{secrets.token_hex(3)}"
            pod = self.pod_manifest(handle, spec, controller)
            created = self._call(
                f"create pod {handle}", self.api.create_namespaced_pod, self.namespace, pod,
                tolerate=409,
            )  # fmt: skip
            if created is not None:
                return handle
        raise ServerError(f"could not find a free pod name in namespace {self.namespace!r}")

    def stop_node(self, handle: str) -> None:
        """Delete the pod; one already gone, or a handle that is not a node pod, is ignored."""
        if not _HANDLE_RE.match(handle):
            return
        self._call(
            f"delete pod {handle}", self.api.delete_namespaced_pod, handle, self.namespace,
            grace_period_seconds=self.grace_period, tolerate=404,
        )  # fmt: skip

    def handles(self) -> list[str]:
        """Names of this provisioner's pods that exist and are not being deleted.

        A pod whose node exited (restartPolicy Never) is still listed until it is stopped.
        """
        selector = f"{MANAGED_LABEL}=pocketlib,{INSTANCE_LABEL}={self.instance}"
        pods = self._call(
            "list pods", self.api.list_namespaced_pod, self.namespace, label_selector=selector
        )
        # The selector already filters; checking again costs nothing and keeps a server that
        # ignores it (or a pod relabelled since) from handing us someone else's pod.
        ours = {MANAGED_LABEL: "pocketlib", INSTANCE_LABEL: self.instance}.items()
        names = []
        for pod in pods.items:
            meta = pod.metadata
            if not ours <= (meta.labels or {}).items() or meta.deletion_timestamp is not None:
                continue
            if _HANDLE_RE.match(meta.name):
                names.append(str(meta.name))
        return sorted(names)

    def close(self) -> None:
        """Delete every pod of this provisioner, then the API client if it made its own."""
        try:
            super().close()
        finally:
            if self._owns_api:
                self.api.api_client.close()

    # -- the secret ---------------------------------------------------------------------------

    def ensure_secret(self, secret: str) -> None:
        """Create or replace the Secret ``secret_name`` whose key ``secret`` the pods read."""
        if not secret:
            raise ConfigError("the cluster secret is empty: nodes would accept any job")
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name, "labels": {MANAGED_LABEL: "pocketlib"}},
            "type": "Opaque",
            "data": {"secret": base64.b64encode(secret.encode()).decode("ascii")},
        }
        what = f"create secret {self.secret_name}"
        created = self._call(
            what, self.api.create_namespaced_secret, self.namespace, body, tolerate=409
        )
        if created is None:  # it exists (an earlier controller, or kubectl): overwrite it
            self._call(
                f"replace secret {self.secret_name}", self.api.replace_namespaced_secret,
                self.secret_name, self.namespace, body,
            )  # fmt: skip
        with self._lock:
            self._secret_stored = secret

    # -- the pod ------------------------------------------------------------------------------

    def pod_manifest(self, name: str, spec: NodeSpec, controller: Address) -> dict[str, Any]:
        """The Pod object that runs the node ``name`` (what start_node sends)."""
        res = self.resources.get(spec.tier, PodResources())
        memory = res.memory_overhead
        command = [
            "pocket", "node", "--tier", spec.tier, "--capacity", str(spec.capacity),
            "--bandwidth", str(spec.bandwidth), "--host", "0.0.0.0", "--port", str(self.port),
            "--controller", str(controller), "--name", name,
            # Kubernetes expands $(POD_IP) from the env below; no shell is involved.
            "--advertise", f"$(POD_IP):{self.port}",
        ]  # fmt: skip
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
        requests: dict[str, str] = {}
        if spec.tier == "dram":
            # tmpfs pages count against the pod's memory limit, so the limit holds the arena.
            shm = spec.capacity + SHM_SLACK
            memory += shm
            volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm)}})
            mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        elif spec.tier in FILE_TIERS:
            host_path = self.host_paths.get(spec.tier)
            if host_path is None:
                volumes.append({"name": "data", "emptyDir": {}})
                command += ["--path", DATA_DIR]
                # A request (not a limit: exceeding one evicts) places the pod on a machine
                # whose disk holds the capacity.
                requests["ephemeral-storage"] = str(spec.capacity)
            else:
                volumes.append(
                    {"name": "data", "hostPath": {"path": host_path, "type": "DirectoryOrCreate"}}
                )
                # One directory per pod: the tier locks its directory to one node, and two
                # pods may share a machine.
                command += ["--path", f"{DATA_DIR}/{name}"]
            mounts.append({"name": "data", "mountPath": DATA_DIR})
        elif spec.path:
            command += ["--path", spec.path]  # e.g. the s3 tier's bucket URL
        limits = {"memory": str(memory)}
        if res.cpu_limit is not None:
            limits["cpu"] = res.cpu_limit
        container: dict[str, Any] = {
            "name": "node",
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "command": command,
            "ports": [{"name": "pocket", "containerPort": self.port, "protocol": "TCP"}],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {
                    "name": "POCKET_SECRET",
                    "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": "secret"}},
                },
            ],
            "resources": {
                "requests": {"cpu": res.cpu_request, "memory": str(memory), **requests},
                "limits": limits,
            },
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False},
        }
        pod_spec: dict[str, Any] = {
            # A dead node is replaced by the controller under a new name, never restarted.
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": max(self.grace_period, 1),
            # The node never calls the Kubernetes API: give it no token to leak.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": volumes,
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        if spec.tier in self.node_selector:
            pod_spec["nodeSelector"] = self.node_selector[spec.tier]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {**self.labels, TIER_LABEL: spec.tier}},
            "spec": pod_spec,
        }

    # -- API calls ----------------------------------------------------------------------------

    def _call(
        self, what: str, method: Callable[..., Any], *args: Any, tolerate: int | None = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        """``method(*args, **kwargs)`` with errors as PocketErrors; None if the status is
        ``tolerate``."""
        try:
            return method(*args, _request_timeout=self.timeout, **kwargs)
        except self._api_exception as exc:
            status = int(getattr(exc, "status", 0) or 0)
            if status == tolerate:
                return None
            raise self._api_error(what, status, exc) from None
        except self._http_error as exc:
            host = self.api.api_client.configuration.host
            raise ConnectError(f"cannot {what}: Kubernetes API at {host}: {exc}") from exc

    def _api_error(self, what: str, status: int, exc: Any) -> PocketError:
        reason, message, kind = _status_details(exc)
        where = f"in namespace {self.namespace!r}"
        text = f"cannot {what} {where}: {status} {reason}: {message}"
        if status in (401, 403):
            return ConfigError(
                f"{text} (the controller's service account needs the Role in deploy/rbac.yaml)"
            )
        if status == 404 and kind == "namespaces":
            return ConfigError(f"{text} (create it: kubectl apply -f deploy/namespace.yaml)")
        if status == 422:  # the API server refused our pod: an invalid label, selector, image
            return ConfigError(text)
        return ServerError(text)


def _status_details(exc: Any) -> tuple[str, str, str]:
    """(reason, message, details.kind) from an ApiException's Status body, where it has one."""
    reason, message, kind = str(getattr(exc, "reason", "") or ""), "", ""
    try:
        status = json.loads(exc.body or b"{}")
    except (TypeError, ValueError):
        status = None
    if isinstance(status, dict):
        reason = str(status.get("reason") or reason)
        message = str(status.get("message") or "")
        details = status.get("details")
        if isinstance(details, dict):
            kind = str(details.get("kind") or "")
    return reason, message or "no message", kind


def _check_reachable(controller: Address) -> None:
    """ConfigError for an address no pod can reach (the controller's bind address)."""
    try:
        ip = ipaddress.ip_address(controller.host)
    except ValueError:  # a DNS name, e.g. the controller's Service
        local = controller.host in ("", "localhost")
    else:
        local = ip.is_loopback or ip.is_unspecified
    if local:
        raise ConfigError(
            f"controller address {controller} is not reachable from a pod; give the nodes "
            "the controller's Service, e.g. pocket-controller.pocket.svc:7070"
        )


def _load_api(kubernetes: Any) -> Any:
    """A CoreV1Api from the in-cluster service account, else from ~/.kube/config."""
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=cfg)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ConfigError(
                f"no Kubernetes configuration: not in a pod, and ~/.kube/config: {exc}"
            ) from exc
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))
