"""KubernetesProvisioner against recorded API-server responses, with the real kubernetes client.

A small HTTP server replays the JSON in tests/data/k8s (written after real API-server output)
by method and path, and records every request; the provisioner talks to it through a real
``CoreV1Api``. The tests assert on what was sent and on how each answer is handled. No real
cluster is involved: whether a kubelet runs the pods as intended is not tested here.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

kubernetes = pytest.importorskip("kubernetes")
yaml = pytest.importorskip("yaml")

from pocketlib.cli import build_parser  # noqa: E402
from pocketlib.config import Address  # noqa: E402
from pocketlib.control.kubernetes import SHM_SLACK, KubernetesProvisioner, PodResources  # noqa: E402
from pocketlib.control.provisioners import NodeSpec  # noqa: E402
from pocketlib.errors import ConfigError, ConnectError, PocketError, ServerError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "k8s"
DEPLOY = ROOT / "deploy"
GiB = 1 << 30
MiB = 1 << 20
CONTROLLER = Address("pocket-controller.pocket.svc", 7070)
PODS = "/api/v1/namespaces/pocket/pods"
SECRETS = "/api/v1/namespaces/pocket/secrets"
HANDLE = re.compile(r"^pocket-(dram|nvme|hdd)-[0-9a-f]{6}$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


class FakeApiServer:
    """Replays recorded responses by method and path glob, in order (the last one repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[str]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def reply(self, method: str, path: str, *files: str) -> None:
        """Answer ``method path`` with these recorded files; the status is the name's suffix."""
        self.routes[(method, path)] = list(files)

    def _answer(self, method: str, path: str) -> tuple[int, bytes]:
        with self._lock:
            for (m, pattern), files in self.routes.items():
                if m == method and fnmatch.fnmatchcase(path, pattern):
                    name = files.pop(0) if len(files) > 1 else files[0]
                    status = int(name.rsplit("-", 1)[1].removesuffix(".json"))
                    return status, (DATA / name).read_bytes()
        missing = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 599,
                   "message": f"no recorded response for {method} {path}"}  # fmt: skip
        return 599, json.dumps(missing).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with server._lock:
                    server.requests.append(
                        Request(self.command, url.path, dict(parse_qsl(url.query)),
                                json.loads(raw) if raw else None)
                    )  # fmt: skip
                status, body = server._answer(self.command, url.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    try:
        yield fake
    finally:
        fake.stop()


def core_api(host: str) -> Any:
    config = kubernetes.client.Configuration(host=host)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


@pytest.fixture
def make(server: FakeApiServer) -> Iterator[Any]:
    """make(**options) -> a KubernetesProvisioner talking to the fake server."""
    apis: list[Any] = []

    def build(**options: Any) -> KubernetesProvisioner:
        api = core_api(server.url)
        apis.append(api)
        return KubernetesProvisioner(api=api, **options)

    yield build
    for api in apis:
        api.api_client.close()


def sent(server: FakeApiServer, method: str, path: str) -> list[Request]:
    return [r for r in server.requests if r.method == method and fnmatch.fnmatchcase(r.path, path)]


def start(server: FakeApiServer, prov: KubernetesProvisioner, spec: NodeSpec) -> dict[str, Any]:
    """start_node with created responses; the pod body it sent."""
    server.reply("POST", SECRETS, "secret-create-201.json")
    server.reply("POST", PODS, "pod-create-201.json")
    handle = prov.start_node(spec, CONTROLLER, "s3cret")
    assert HANDLE.match(handle)
    pod: dict[str, Any] = sent(server, "POST", PODS)[-1].body
    assert pod["metadata"]["name"] == handle
    return pod


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


# -- what start_node sends -------------------------------------------------------------------


def test_dram_pod(server: FakeApiServer, make: Any) -> None:
    prov = make()
    spec = NodeSpec("dram", GiB, 1_250_000_000)
    pod = start(server, prov, spec)
    name = pod["metadata"]["name"]
    # The Secret first (the pod reads it), then the pod; nothing waits for the pod to run.
    assert [(r.method, r.path) for r in server.requests] == [("POST", SECRETS), ("POST", PODS)]
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "pocket-node",
        "app.kubernetes.io/managed-by": "pocketlib",
        "app.kubernetes.io/instance": "pocket",
        "pocketlib/tier": "dram",
    }
    spec_ = pod["spec"]
    assert spec_["restartPolicy"] == "Never"
    assert spec_["automountServiceAccountToken"] is False
    assert "nodeSelector" not in spec_
    assert "serviceAccountName" not in spec_
    (container,) = spec_["containers"]
    assert container["image"] == "pocketlib:latest"
    assert container["command"] == [
        "pocket", "node", "--tier", "dram", "--capacity", str(GiB),
        "--bandwidth", "1250000000", "--host", "0.0.0.0", "--port", "7000",
        "--controller", "pocket-controller.pocket.svc:7070", "--name", name,
        "--advertise", "$(POD_IP):7000",
    ]  # fmt: skip
    env = env_of(container)
    assert env["POD_IP"] == {
        "name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}
    }  # fmt: skip
    assert env["POCKET_SECRET"]["valueFrom"] == {
        "secretKeyRef": {"name": "pocket-secret", "key": "secret"}
    }
    assert "s3cret" not in json.dumps(pod)  # the secret only travels in the Secret
    assert container["ports"] == [{"name": "pocket", "containerPort": 7000, "protocol": "TCP"}]
    # The arena lives in a Memory emptyDir at /dev/shm that holds the whole capacity...
    assert spec_["volumes"] == [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(GiB + SHM_SLACK)}}
    ]
    assert container["volumeMounts"] == [{"name": "shm", "mountPath": "/dev/shm"}]
    # ...and tmpfs pages are charged to the pod, so the memory limit covers arena + overhead.
    resources = container["resources"]
    assert int(resources["limits"]["memory"]) >= GiB + PodResources().memory_overhead
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert resources["requests"]["cpu"] == "1"
    assert "cpu" not in resources["limits"]


def test_pod_is_valid_for_the_client_models(server: FakeApiServer, make: Any) -> None:
    """Every key of the sent pod survives a round trip through V1Pod: no misspelled field."""
    pod = start(server, make(), NodeSpec("nvme", 8 * GiB, 500_000_000))
    client = kubernetes.client.ApiClient()

    class Response:
        data = json.dumps(pod)

    model = client.deserialize(Response(), "V1Pod")
    assert client.sanitize_for_serialization(model) == pod
    client.close()


def test_command_parses_with_the_node_cli(server: FakeApiServer, make: Any) -> None:
    """The command, with $(POD_IP) expanded as the kubelet does, is a valid ``pocket node``."""
    from pocketlib.config import parse_size, parse_throughput

    pod = start(server, make(), NodeSpec("dram", GiB, 1_250_000_000))
    (container,) = pod["spec"]["containers"]
    command = [arg.replace("$(POD_IP)", "10.244.1.17") for arg in container["command"]]
    assert command[0] == "pocket"
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.tier, args.host, args.port) == ("node", "dram", "0.0.0.0", 7000)
    assert parse_size(args.capacity) == GiB
    assert parse_throughput(args.bandwidth) == 1_250_000_000
    assert Address.parse(args.controller) == CONTROLLER
    assert args.name == pod["metadata"]["name"]
    assert Address.parse(args.advertise) == Address("10.244.1.17", 7000)
    assert args.secret is None  # read from POCKET_SECRET, never on the command line


def test_nvme_pod_with_emptydir_and_node_selector(server: FakeApiServer, make: Any) -> None:
    selector = {"node.kubernetes.io/instance-type": "i3.2xlarge"}
    prov = make(
        node_selector={"nvme": selector}, resources={"nvme": PodResources("2", "4", 256 * MiB)}
    )
    pod = start(server, prov, NodeSpec("nvme", 100 * GiB, 500_000_000, path="/ignored/here"))
    spec_ = pod["spec"]
    (container,) = spec_["containers"]
    assert container["command"][-2:] == ["--path", "/data"]
    assert spec_["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert spec_["nodeSelector"] == selector
    assert pod["metadata"]["labels"]["pocketlib/tier"] == "nvme"
    # The data file is not in memory: only the overhead is; the disk request holds the capacity.
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": str(256 * MiB), "ephemeral-storage": str(100 * GiB)},
        "limits": {"memory": str(256 * MiB), "cpu": "4"},
    }


def test_hdd_pod_on_a_host_path(server: FakeApiServer, make: Any) -> None:
    prov = make(host_paths={"hdd": "/mnt/disks/hdd"})
    pod = start(server, prov, NodeSpec("hdd", 500 * GiB, 200_000_000))
    name = pod["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert pod["spec"]["volumes"] == [
        {"name": "data", "hostPath": {"path": "/mnt/disks/hdd", "type": "DirectoryOrCreate"}}
    ]
    # One directory per pod: two pods on one machine must not share (the tier locks it).
    assert container["command"][-2:] == ["--path", f"/data/{name}"]
    assert "ephemeral-storage" not in container["resources"]["requests"]


def test_options_reach_the_pod(server: FakeApiServer, make: Any) -> None:
    prov = make(
        image="registry.example/pocketlib:0.1.0", port=7100, service_account="pocket-node",
        labels={"team": "analytics", "app.kubernetes.io/managed-by": "helm"},
        secret_name="other-secret", instance="staging",
    )  # fmt: skip
    pod = start(server, prov, NodeSpec("dram", 64 * MiB, 10**9))
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "analytics"
    assert labels["app.kubernetes.io/managed-by"] == "pocketlib"  # ours cannot be overridden
    assert labels["app.kubernetes.io/instance"] == "staging"
    assert pod["spec"]["serviceAccountName"] == "pocket-node"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/pocketlib:0.1.0"
    assert "--port" in container["command"]
    assert "$(POD_IP):7100" in container["command"]
    assert env_of(container)["POCKET_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "other-secret"
    assert sent(server, "POST", SECRETS)[0].body["metadata"]["name"] == "other-secret"


# -- the secret ------------------------------------------------------------------------------


def test_secret_is_stored_once_per_value(server: FakeApiServer, make: Any) -> None:
    prov = make()
    start(server, prov, NodeSpec("dram", GiB, 10**9))
    start(server, prov, NodeSpec("dram", GiB, 10**9))
    (created,) = sent(server, "POST", SECRETS)
    assert created.body["type"] == "Opaque"
    assert base64.b64decode(created.body["data"]["secret"]) == b"s3cret"
    prov.start_node(NodeSpec("dram", GiB, 10**9), CONTROLLER, "rotated")
    assert len(sent(server, "POST", SECRETS)) == 2  # a new secret is stored before the pod


def test_existing_secret_is_replaced(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "secret-exists-409.json")
    server.reply("PUT", f"{SECRETS}/pocket-secret", "secret-replace-200.json")
    make().ensure_secret("new-secret")
    (put,) = sent(server, "PUT", f"{SECRETS}/pocket-secret")
    assert put.body["metadata"]["name"] == "pocket-secret"
    assert base64.b64decode(put.body["data"]["secret"]) == b"new-secret"


def test_empty_secret_is_refused(server: FakeApiServer, make: Any) -> None:
    with pytest.raises(ConfigError, match="empty"):
        make().ensure_secret("")
    assert server.requests == []


# -- stop_node, handles, close ---------------------------------------------------------------


def test_stop_node_deletes_the_pod(server: FakeApiServer, make: Any) -> None:
    server.reply("DELETE", f"{PODS}/*", "pod-delete-200.json")
    make().stop_node("pocket-dram-3f9a1c")
    (delete,) = server.requests
    assert (delete.method, delete.path) == ("DELETE", f"{PODS}/pocket-dram-3f9a1c")
    assert delete.query == {"gracePeriodSeconds": "5"}


def test_stop_node_is_idempotent(server: FakeApiServer, make: Any) -> None:
    server.reply("DELETE", f"{PODS}/*", "pod-notfound-404.json")
    prov = make()
    prov.stop_node("pocket-dram-3f9a1c")  # 404: already gone, not an error
    prov.stop_node("kube-dns-5d78c9869d-x2x9k")  # not a node pod: never deleted
    assert [r.path for r in server.requests] == [f"{PODS}/pocket-dram-3f9a1c"]


def test_handles_from_the_list(server: FakeApiServer, make: Any) -> None:
    server.reply("GET", PODS, "pod-list-200.json")
    # Running and Failed pods are ours; a terminating pod and another instance's are not.
    assert make().handles() == ["pocket-dram-3f9a1c", "pocket-nvme-0b12cd"]
    (listing,) = server.requests
    assert listing.query["labelSelector"] == (
        "app.kubernetes.io/managed-by=pocketlib,app.kubernetes.io/instance=pocket"
    )


def test_close_deletes_every_pod(server: FakeApiServer, make: Any) -> None:
    server.reply("GET", PODS, "pod-list-200.json")
    server.reply("DELETE", f"{PODS}/*", "pod-delete-200.json")
    make().close()
    assert sorted(r.path for r in sent(server, "DELETE", f"{PODS}/*")) == [
        f"{PODS}/pocket-dram-3f9a1c",
        f"{PODS}/pocket-nvme-0b12cd",
    ]


def test_taken_pod_name_is_retried(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "secret-create-201.json")
    server.reply("POST", PODS, "pod-exists-409.json", "pod-create-201.json")
    handle = make().start_node(NodeSpec("dram", GiB, 10**9), CONTROLLER, "s3cret")
    first, second = (r.body["metadata"]["name"] for r in sent(server, "POST", PODS))
    assert first != second
    assert handle == second


# -- errors ----------------------------------------------------------------------------------


def test_forbidden_is_a_config_error_naming_the_namespace(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "secret-create-201.json")
    server.reply("POST", PODS, "pod-forbidden-403.json")
    with pytest.raises(ConfigError) as info:
        make().start_node(NodeSpec("dram", GiB, 10**9), CONTROLLER, "s3cret")
    message = str(info.value)
    assert "namespace 'pocket'" in message
    assert "403 Forbidden" in message
    assert "cannot create resource" in message
    assert "deploy/rbac.yaml" in message
    assert isinstance(info.value, PocketError)


def test_missing_namespace_is_a_config_error(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "namespace-notfound-404.json")
    with pytest.raises(ConfigError, match=r"namespaces \"pocket\" not found"):
        make().ensure_secret("s3cret")


def test_invalid_pod_is_a_config_error(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "secret-create-201.json")
    server.reply("POST", PODS, "pod-invalid-422.json")
    prov = make(labels={"team": "data team"})
    with pytest.raises(ConfigError, match=r"422 Invalid: Pod .* is invalid: metadata.labels"):
        prov.start_node(NodeSpec("dram", GiB, 10**9), CONTROLLER, "s3cret")


def test_other_failures_are_server_errors(server: FakeApiServer, make: Any) -> None:
    server.reply("GET", PODS, "etcd-timeout-500.json")
    with pytest.raises(ServerError, match="etcdserver: request timed out") as info:
        make().handles()
    assert not isinstance(info.value, ConfigError)


def test_unreachable_api_is_a_connect_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = core_api(f"http://127.0.0.1:{port}")
    api.api_client.configuration.retries = 0
    prov = KubernetesProvisioner(api=api)
    with pytest.raises(ConnectError, match="list pods"):
        prov.handles()
    api.api_client.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "::", "localhost"])
def test_unreachable_controller_address_is_refused(
    server: FakeApiServer, make: Any, host: str
) -> None:
    with pytest.raises(ConfigError, match="not reachable from a pod"):
        make().start_node(NodeSpec("dram", GiB, 10**9), Address(host, 7070), "s3cret")
    assert server.requests == []


def test_missing_client_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'pocketlib[k8s]'")):
        KubernetesProvisioner(api=object())


def test_import_pocketlib_does_not_import_kubernetes() -> None:
    code = (
        "import sys, pocketlib, pocketlib.control.provisioners; print('kubernetes' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.stdout.strip() == "False"


# -- deploy/ ---------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests() if d["kind"] == kind]
    return doc


def test_manifests_parse_and_fit_together() -> None:
    docs = manifests()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"]
    )
    for doc in docs:
        assert doc["apiVersion"]
        assert doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "pocket"
    assert one("Namespace")["metadata"]["name"] == "pocket"
    account, role, binding = one("ServiceAccount"), one("Role"), one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "pocket"}
    ]
    deployment, service = one("Deployment"), one("Service")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 1
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["pocket", "controller"]
    args = build_parser().parse_args(container["command"][1:])
    assert (args.host, args.port, args.provisioner) == ("0.0.0.0", 7070, "kubernetes")
    assert args.namespace == pod["metadata"].get("namespace", "pocket")
    # Nodes and clients dial the Service, which must be the address advertised.
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert Address.parse(args.advertise) == Address(f"{name}.{namespace}.svc", 7070)
    assert args.image == container["image"]
    (env,) = container["env"]
    assert env["valueFrom"]["secretKeyRef"] == {
        "name": "pocket-secret", "key": "secret", "optional": True,
    }  # fmt: skip
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 7070
    assert port["targetPort"] == container["ports"][0]["name"]
    assert container["ports"][0]["containerPort"] == 7070


def test_manifests_are_valid_for_the_client_models() -> None:
    """Each manifest survives a round trip through its V1 model: no misspelled field."""
    client = kubernetes.client.ApiClient()
    for doc in manifests():

        class Response:
            data = json.dumps(doc)

        model = client.deserialize(Response(), f"V1{doc['kind']}")
        assert client.sanitize_for_serialization(model) == doc, doc["kind"]
    client.close()


def verb(method: str, path: str) -> tuple[str, str]:
    """(resource, RBAC verb) of a core/v1 namespaced request."""
    parts = path.removeprefix("/api/v1/namespaces/pocket/").split("/")
    collection = len(parts) == 1
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return parts[0], ("list" if collection else "get") if method == "GET" else verbs[method]


def test_role_grants_exactly_the_verbs_used(server: FakeApiServer, make: Any) -> None:
    server.reply("POST", SECRETS, "secret-exists-409.json")
    server.reply("PUT", f"{SECRETS}/*", "secret-replace-200.json")
    server.reply("POST", PODS, "pod-create-201.json")
    server.reply("GET", PODS, "pod-list-200.json")
    server.reply("DELETE", f"{PODS}/*", "pod-delete-200.json")
    prov = make()
    for tier in ("dram", "nvme", "hdd"):
        prov.start_node(NodeSpec(tier, GiB, 10**9), CONTROLLER, "s3cret")
    prov.handles()
    prov.stop_node("pocket-dram-3f9a1c")
    prov.close()
    used: dict[str, set[str]] = {}
    for request in server.requests:
        resource, v = verb(request.method, request.path)
        used.setdefault(resource, set()).add(v)
    granted: dict[str, set[str]] = {}
    for rule in one("Role")["rules"]:
        assert rule["apiGroups"] == [""]
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert used == {"pods": {"create", "list", "delete"}, "secrets": {"create", "update"}}
    assert granted == used


def test_dockerfile_installs_the_k8s_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#")
    assert "FROM python:3.11-slim" in text
    assert 'pip install --no-cache-dir ".[k8s]"' in text
