"""The ``pocket`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .bench.settings import DESCRIPTION as BENCH_DESCRIPTION
from .bench.settings import add_options as add_bench_options
from .config import Address, parse_size, parse_throughput
from .errors import ConfigError, PocketError

__all__ = ["main"]


def _node(args: argparse.Namespace) -> int:
    import os
    import socket

    from .node import StorageNode
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
        from .node_agent import ControllerLink

        link = ControllerLink(
            node, args.controller, name=args.name or f"{socket.gethostname()}-{os.getpid()}",
            secret=(secret or "").encode(), bandwidth=parse_throughput(args.bandwidth),
            advertise=Address.parse(args.advertise) if args.advertise else None,
            interval=args.heartbeat,
        )  # fmt: skip

    # The handler only records the signal: taking a lock there (Event.set) can deadlock
    # against the main thread if the signal lands while that thread holds the same lock.
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    if link is not None:
        link.start()
    print(node.address, flush=True)
    try:
        while not signals:
            time.sleep(0.05)
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
    from .client import Client

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
