"""The ``pocket`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from .bench.settings import DESCRIPTION as BENCH_DESCRIPTION
from .bench.settings import add_options as add_bench_options
from .config import Address, parse_size, parse_throughput
from .errors import ConfigError, PocketError

if TYPE_CHECKING:
    from .routing.allocation import TierSpec
    from .routing.autoscale import Band

__all__ = ["main"]


def _node(args: argparse.Namespace) -> int:
    import os
    import socket

    from .node.server import StorageNode
    from .tiers import load_driver

    driver = load_driver(args.tier).from_options(parse_size(args.capacity), args.path)
    if args.spill:
        from .tiers.chain import ChainTier

        tiers = [driver]
        try:
            for spec in args.spill:
                name, capacity, path = parse_spill(spec)
                tiers.append(load_driver(name).from_options(capacity, path))
        except BaseException:
            for tier in tiers:
                tier.close()
            raise
        driver = ChainTier(tiers)
    if args.persist:
        from .tiers.persist import PersistingTier

        name, capacity, path = parse_spill(args.persist)
        try:
            driver = PersistingTier(driver, load_driver(name).from_options(capacity, path))
        except BaseException:
            driver.close()
            raise
    secret = args.secret or os.environ.get("POCKET_SECRET")
    if args.controller and not secret:
        driver.close()
        raise ConfigError("a node managed by a controller needs the cluster secret "
                          "(--secret or POCKET_SECRET)")  # fmt: skip
    node = StorageNode(
        driver, args.host, args.port, secret=secret.encode() if secret else None,
        managed=bool(args.controller),
    )  # fmt: skip
    link = None
    if args.controller:
        from .node.agent import ControllerLink

        link = ControllerLink(
            node, args.controller, name=args.name or f"{socket.gethostname()}-{os.getpid()}",
            secret=(secret or "").encode(), bandwidth=parse_throughput(args.bandwidth),
            advertise=Address.parse(args.advertise) if args.advertise else None,
            interval=args.heartbeat,
        )  # fmt: skip

    signals = _catch_signals()
    node.start()
    if link is not None:
        link.start()
    print(node.address, flush=True)
    try:
        _wait_for(signals, parent=os.getppid() if args.exit_with_parent else None)
    finally:
        if link is not None:
            link.stop()
        node.stop()
    return 0


def parse_spill(spec: str) -> tuple[str, int, str | None]:
    """``TIER:CAPACITY[:PATH]`` (the path may itself hold colons, as ``s3://`` does)."""

    name, _, rest = spec.partition(":")
    capacity, _, path = rest.partition(":")
    if not name or not capacity:
        raise ConfigError(f"--spill {spec!r}: expected TIER:CAPACITY[:PATH], e.g. nvme:8GiB:/mnt")
    return name, parse_size(capacity), path or None


def _stats(args: argparse.Namespace) -> int:
    from .client.client import Client

    client = Client(args.nodes)
    try:
        print(json.dumps(client.node_stats(), indent=2, sort_keys=True))
    finally:
        client.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .workloads.sort import run_demo

    return run_demo(
        total=parse_size(args.size), mappers=args.mappers, reducers=args.reducers,
        capacity=args.capacity, progress=not args.quiet,
    )  # fmt: skip


def _catch_signals() -> list[int]:
    """Record SIGTERM and SIGINT in the returned list from now on.

    The handler only records the signal: taking a lock there (Event.set) can deadlock
    against the main thread if the signal lands while that thread holds the same lock.
    """
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return signals


def _wait_for(signals: list[int], *, parent: int | None = None) -> None:
    """Until a signal is recorded, or (with ``parent``) until that parent process is gone."""
    import os

    while not signals:
        if parent is not None and os.getppid() != parent:
            return  # orphaned: whoever started this node died without stopping it
        time.sleep(0.05)


def parse_tier(spec: str) -> TierSpec:
    """``TIER:NODE_CAPACITY:NODE_BANDWIDTH[:PRICE_PER_HOUR]``, e.g. ``dram:8GiB:1GB/s``."""
    from .routing.allocation import DEFAULT_TIERS, TierSpec

    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[0]:
        raise ConfigError(
            f"--tier {spec!r}: expected TIER:CAPACITY:BANDWIDTH[:PRICE], e.g. dram:8GiB:1GB/s"
        )
    name = parts[0]
    default = DEFAULT_TIERS.get(name)
    try:
        price = float(parts[3]) if len(parts) == 4 else (default.price_per_hour if default else 0)
    except ValueError:
        raise ConfigError(f"--tier {spec!r}: price {parts[3]!r} is not a number") from None
    instance = default.instance if default else ""
    return TierSpec(name, parse_size(parts[1]), parse_throughput(parts[2]), price, instance)


def parse_counts(specs: Sequence[str], flag: str) -> dict[str, int]:
    """``TIER=N`` pairs."""
    counts: dict[str, int] = {}
    for spec in specs:
        tier, sep, n = spec.partition("=")
        if not sep or not tier or not n.isdigit():
            raise ConfigError(f"{flag} {spec!r}: expected TIER=N, e.g. dram=2")
        counts[tier] = int(n)
    return counts


def parse_band(text: str) -> Band:
    """``LOW-HIGH`` as fractions or percentages (``0.6-0.8`` or ``60-80``)."""
    from .routing.autoscale import Band

    low, sep, high = text.partition("-")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise ConfigError(f"--band {text!r}: expected LOW-HIGH, e.g. 60-80") from None
    if not sep:
        raise ConfigError(f"--band {text!r}: expected LOW-HIGH, e.g. 60-80")
    if hi > 1:
        lo, hi = lo / 100, hi / 100
    return Band(lo, hi)


def _controller(args: argparse.Namespace) -> int:
    import os

    from .control.controller import Controller
    from .control.provisioners import LocalProvisioner, Provisioner
    from .control.server import ControlServer

    provisioner: Provisioner | None = None
    if args.provisioner == "local":
        provisioner = LocalProvisioner("127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host)
    elif args.provisioner == "kubernetes":
        from .control.kubernetes import KubernetesProvisioner

        provisioner = KubernetesProvisioner(namespace=args.namespace, image=args.image)
    tiers = {t.name: t for t in map(parse_tier, args.tier)} or None
    controller = Controller(
        secret=args.secret or os.environ.get("POCKET_SECRET"), provisioner=provisioner,
        tiers=tiers, band=parse_band(args.band), min_nodes=parse_counts(args.min, "--min"),
        max_nodes=args.max_nodes, state_path=args.state, autoscale=not args.no_autoscale,
        dead_after=args.dead_after,
    )  # fmt: skip
    signals = _catch_signals()
    server = ControlServer(controller, args.host, args.port, advertise=args.advertise)
    server.start()
    print(controller.address, flush=True)
    try:
        _wait_for(signals)
    finally:
        server.stop()
        if isinstance(provisioner, LocalProvisioner):  # its nodes are this process's children
            provisioner.close()
    return 0


def _up(args: argparse.Namespace) -> int:
    from .control.cluster import LocalCluster

    counts = parse_counts(args.nodes, "--nodes") or {"dram": 2}
    signals = _catch_signals()
    with LocalCluster(
        counts, node_capacity=args.node_capacity, node_bandwidth=args.node_bandwidth,
        max_nodes=args.max_nodes, band=parse_band(args.band), host=args.host, port=args.port,
        state_path=args.state,
    ) as cluster:  # fmt: skip
        print(cluster.address, flush=True)
        nodes = ", ".join(f"{n} {t}" for t, n in counts.items())
        print(f"pocket: controller and {nodes} node(s) up; `pocket status {cluster.address}` "
              "shows them; Ctrl-C stops everything", file=sys.stderr)  # fmt: skip
        _wait_for(signals)
    return 0


def _status(args: argparse.Namespace) -> int:
    from .client.client import Client
    from .control.status import render

    with Client(args.controller) as client:
        while True:
            status = client.status()
            if args.json:
                print(json.dumps(status, indent=2, sort_keys=True))
            else:
                print(render(status), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
            print()


def _bench(args: argparse.Namespace) -> int:
    import importlib.util
    import shutil

    problems: list[str] = []
    installs: list[str] = []
    if shutil.which("redis-server") is None:
        problems.append("redis-server is not on PATH")
        installs.append("apt-get install -y redis-server")
    modules = {"redis": "redis-py", "hiredis": "hiredis", "numpy": "numpy"}
    missing = [name for mod, name in modules.items() if importlib.util.find_spec(mod) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        problems.append(f"{', '.join(missing)} {verb} not installed")
        installs.append("pip install 'pocketlib[bench]'")
    if problems:
        hint = " and ".join(installs)
        print(f"pocket bench: {' and '.join(problems)}; install with: {hint}", file=sys.stderr)
        return 1
    from .bench.dataplane import run

    return run(args)


def _lithops(args: argparse.Namespace) -> int:
    from .serverless.lithops_storage import install_backend

    where = install_backend()
    print(f"the pocket storage backend is installed in {where}: storage='pocket'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pocket``."""
    parser = argparse.ArgumentParser(prog="pocket", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a storage node (prints its address first)")
    node.add_argument("--tier", default="dram", help="tier driver (default: dram)")
    node.add_argument("--capacity", default="1GiB", help="bytes the tier may hold, e.g. 8GiB")
    node.add_argument("--path", default=None, help="directory for file-backed tiers")
    node.add_argument(
        "--spill", action="append", default=[], metavar="TIER:CAPACITY[:PATH]",
        help="a slower tier that takes puts when the ones before it are full (repeatable)",
    )  # fmt: skip
    node.add_argument(
        "--persist", default=None, metavar="TIER:CAPACITY[:PATH]",
        help="where puts with persist=True are written through to (e.g. s3:1TiB:s3://b/p)",
    )  # fmt: skip
    node.add_argument("--host", default="127.0.0.1")
    node.add_argument("--port", type=int, default=0, help="0 picks a free port")
    node.add_argument("--secret", default=None, help="token secret (or env POCKET_SECRET)")
    node.add_argument(
        "--controller", default=None, metavar="HOST:PORT",
        help="register with this controller and heartbeat to it (tokens then come only from it)",
    )  # fmt: skip
    node.add_argument("--name", default=None, help="name to register under (default: host-pid)")
    node.add_argument(
        "--bandwidth", default="1GB/s", help="network bandwidth the controller may allocate"
    )
    node.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop when the process that started this node exits (embedded clusters)",
    )  # fmt: skip
    node.add_argument(
        "--heartbeat", type=float, default=1.0, metavar="SECONDS",
        help="seconds between heartbeats to the controller (default: 1)",
    )  # fmt: skip
    node.add_argument(
        "--advertise", default=None, metavar="HOST:PORT",
        help="address clients reach this node at (default: the bound address)",
    )  # fmt: skip
    node.set_defaults(func=_node)

    stats = sub.add_parser("stats", help="print nodes' stats as JSON")
    stats.add_argument("nodes", nargs="+", help="node addresses host:port")
    stats.set_defaults(func=_stats)

    controller = sub.add_parser(
        "controller", help="run the controller (prints its address first)",
        description="The control plane: registers nodes and jobs, allocates, autoscales.",
    )  # fmt: skip
    controller.add_argument("--host", default="127.0.0.1")
    controller.add_argument("--port", type=int, default=7070, help="0 picks a free port")
    controller.add_argument(
        "--advertise",
        default=None,
        metavar="HOST:PORT",
        help="address nodes and clients reach the controller at",
    )
    controller.add_argument(
        "--secret", default=None, help="cluster secret (or env POCKET_SECRET; default: random)"
    )
    controller.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="keep jobs, tokens and usage here across restarts",
    )
    controller.add_argument(
        "--provisioner",
        choices=["none", "local", "kubernetes"],
        default="none",
        help="who starts and stops nodes (default: none)",
    )
    controller.add_argument(
        "--tier",
        action="append",
        default=[],
        metavar="TIER:CAPACITY:BANDWIDTH[:PRICE]",
        help="a kind of node the provisioner starts (repeatable; default: Pocket's EC2 nodes)",
    )
    controller.add_argument(
        "--min",
        action="append",
        default=[],
        metavar="TIER=N",
        help="fewest nodes of a tier (repeatable)",
    )
    controller.add_argument("--max-nodes", type=int, default=64)
    controller.add_argument("--band", default="60-80", help="utilization band, LOW-HIGH")
    controller.add_argument(
        "--dead-after",
        type=float,
        default=3.0,
        help="seconds without a heartbeat before a node is dead",
    )
    controller.add_argument("--no-autoscale", action="store_true")
    controller.add_argument("--namespace", default="pocket", help="kubernetes namespace")
    controller.add_argument("--image", default="pocketlib:latest", help="node image (k8s)")
    controller.set_defaults(func=_controller)

    up = sub.add_parser("up", help="a controller and nodes on this machine (prints its address)")
    up.add_argument(
        "--nodes",
        action="append",
        default=[],
        metavar="TIER=N",
        help="nodes to start with, also the minimum (default: dram=2)",
    )
    up.add_argument("--node-capacity", default="1GiB")
    up.add_argument("--node-bandwidth", default="1GB/s")
    up.add_argument("--max-nodes", type=int, default=16)
    up.add_argument("--band", default="60-80")
    up.add_argument("--state", default=None, metavar="PATH")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=7070)
    up.set_defaults(func=_up)

    status = sub.add_parser("status", help="nodes, jobs, usage and cost from a controller")
    status.add_argument("controller", help="controller address host:port")
    status.add_argument("--json", action="store_true", help="the raw status as JSON")
    status.add_argument(
        "--watch", type=float, default=0, metavar="SECONDS", help="print again every SECONDS"
    )
    status.set_defaults(func=_status)

    demo = sub.add_parser("demo", help="the main job: a MapReduce sort through an embedded node")
    demo.add_argument("--size", default="1GiB", help="input size (100-byte records)")
    demo.add_argument("--mappers", type=int, default=8)
    demo.add_argument("--reducers", type=int, default=8)
    demo.add_argument("--capacity", default=None, help="node capacity (default: 1.5x input)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench", help="benchmark against a real redis-server", description=BENCH_DESCRIPTION
    )
    add_bench_options(bench)
    bench.set_defaults(func=_bench)

    lithops = sub.add_parser("lithops", help="pocketlib for Lithops")
    actions = lithops.add_subparsers(dest="action", required=True)
    install = actions.add_parser(
        "install", help="install the 'pocket' storage backend into the installed lithops"
    )
    install.set_defaults(func=_lithops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pocket`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except PocketError as exc:
        print(f"pocket: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
