"""The house rules, checked on the source: one-way imports between rooms, no circles, short modules.

The graph is built from every ``import`` and ``from ... import`` in ``pocketlib/``, including
lazy imports inside functions and ``TYPE_CHECKING`` blocks: a circle among type-only imports is
still a circle a reader has to hold in their head. ``from pkg import name`` counts as an import
of ``pkg.name`` when that is a module, else of ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pocketlib"

#: The rooms and what each may import (besides itself and the bottom floor). A room missing
#: here may import anything below it; the rule that matters is what a room must never reach.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The client reaches a node only over the protocol, and never the controller's insides.
    "client": ("node", "control", "tiers", "serverless", "arrow", "filesystem", "cli"),
    # A node serves a tier; it knows nothing of clients, the controller's insides or above.
    "node": ("client", "control", "serverless", "arrow", "filesystem", "cli"),
    # A tier is a driver: it never imports the node that serves it, nor anything above.
    "tiers": ("node", "client", "control", "routing", "serverless", "arrow", "filesystem", "cli"),
    # Routing is pure: no sockets, no tiers, no processes.
    "routing": ("node", "client", "control", "tiers", "serverless", "transport", "rpc", "cli"),
    "control": ("node", "serverless", "arrow", "filesystem", "cli"),
}

#: The bottom floor: modules every room may use, which import nothing of pocketlib above them.
BOTTOM = (
    "errors", "config", "version", "protocol", "bodies", "frames", "transport", "connection",
    "rpc", "auth", "ticket", "heap",
)  # fmt: skip
#: What the bottom floor may import besides itself: routing is pure (a ticket carries maps).
BOTTOM_MAY_IMPORT = (*BOTTOM, "routing")

#: Modules allowed past the line limit, with the reason. Empty when the house is in order.
LONG_MODULES: dict[str, str] = {}

MAX_LINES = 500

#: Modules allowed in an import circle. Empty when the house is in order.
CIRCLE_ALLOWED: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The pocketlib modules ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            if not base.startswith("pocketlib"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(name)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def room(name: str) -> str:
    """``pocketlib.client.job`` -> ``client``; ``pocketlib.errors`` -> ``errors``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_circle_finder_finds_a_circle_and_only_one() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(edges) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_lazy_and_type_only_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..errors import PocketError\n"
        "if TYPE_CHECKING:\n"
        "    from .typed import Thing\n"
        "def later():\n"
        "    import pocketlib.lazy.deep\n"
        "    from .. import config\n"
        "import os\n"
    )
    known = dict.fromkeys(
        ["pocketlib.room.sibling", "pocketlib.errors", "pocketlib.room.typed",
         "pocketlib.lazy", "pocketlib.config", "pocketlib.room.unused"],
        source,
    )  # fmt: skip
    assert imports_of("pocketlib.room.mod", source, known) == {
        "pocketlib.room.sibling", "pocketlib.errors", "pocketlib.room.typed", "pocketlib.lazy",
        "pocketlib.config",
    }  # fmt: skip


def test_no_import_circles() -> None:
    found = [c for c in circles(graph()) if not set(c) <= CIRCLE_ALLOWED]
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("source_room", sorted(FORBIDDEN))
def test_rooms_import_one_way(source_room: str) -> None:
    bad = [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        if room(src) == source_room
        for dst in sorted(targets)
        if room(dst) in FORBIDDEN[source_room]
    ]
    assert not bad, "\n".join(bad)


def test_the_bottom_floor_imports_only_the_bottom_floor() -> None:
    bad = [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        if room(src) in BOTTOM
        for dst in sorted(targets)
        if room(dst) not in BOTTOM_MAY_IMPORT
    ]
    assert not bad, "\n".join(bad)


def test_no_module_inside_imports_the_package_itself() -> None:
    bad = [
        src
        for src, targets in graph().items()
        if "pocketlib" in targets
        and src not in ("pocketlib.bench.dataplane", "pocketlib.bench.sort_peers")
    ]
    assert not bad, f"these import pocketlib's __init__ (import the module instead): {bad}"


def test_modules_are_short() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > MAX_LINES and name not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
