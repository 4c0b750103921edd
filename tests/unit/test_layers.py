"""Imports run one way (docs/architecture.md, "Layers"): dashboard, jobs and infra use udfs and pipelines; udfs uses
pipelines and the native scorer; pipelines uses nothing of ours above it. No module imports a higher layer or a
sibling at its own level, and no import chain comes back to where it started, lazy imports inside functions
included. The walk reads the sources with `ast`, so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Package -> layer. The native scorer's Python package lives in cpp_ext/ and is imported as streamscore_native.
LAYERS = {"pipelines": 0, "streamscore_native": 0, "udfs": 1, "jobs": 2, "dashboard": 2, "infra": 2}
SOURCES = {"pipelines": "pipelines", "udfs": "udfs", "jobs": "jobs", "dashboard": "dashboard", "infra": "infra",
           "streamscore_native": "cpp_ext"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cpp_ext":
        # cpp_ext/streamscore_native/x.py is streamscore_native.x; cpp_ext/tools/y.py are scripts run by make.
        parts = parts[1:] if parts[1] == "streamscore_native" else ["streamscore_native", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module of ours this source imports, at the top or inside a function (a lazy import still couples)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from pipelines import metrics` imports the module pipelines.metrics.
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in LAYERS}


def package_modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for top, folder in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if any(p.startswith(".") or p in {"build", "__pycache__"} for p in path.relative_to(ROOT).parts):
                continue
            mods[module_name(path)] = (path, path.name == "__init__.py")
    return mods


def import_graph(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    graph = {}
    for mod, (path, is_pkg) in mods.items():
        targets = set()
        for t in imports_of(path.read_text(), mod, is_pkg):
            # Resolve `pipelines.metrics.X` (a name in a module) to the module itself.
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != mod:
                targets.add(t)
        graph[mod] = targets
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        src = mod.split(".")[0]
        for t in sorted(targets):
            dst = t.split(".")[0]
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                kind = "a higher layer" if LAYERS[dst] > LAYERS[src] else "a sibling at its own layer"
                bad.append(f"{mod} imports {t} ({kind}: {src}={LAYERS[src]}, {dst}={LAYERS[dst]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(package_modules())


def test_the_walk_sees_the_packages(graph: dict[str, set[str]]) -> None:
    assert {"pipelines.config", "udfs.routing", "jobs.fraud_job", "infra.services", "dashboard.server"} <= set(graph)
    assert "pipelines.config" in graph["jobs.fraud_job"]


def test_no_import_from_a_lower_layer_to_a_higher_one(graph: dict[str, set[str]]) -> None:
    assert layer_violations(graph) == []


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_the_checks_catch_what_they_should() -> None:
    lazy_upward = "def f():\n    from infra.services import free_port\n"
    assert imports_of(lazy_upward, "pipelines.x") == {"infra.services", "infra.services.free_port"}
    g = {"pipelines.x": {"infra.services"}, "infra.services": set(), "jobs.a": {"infra.b"}, "infra.b": set()}
    assert len(layer_violations(g)) == 2
    assert cycles({"infra.a": {"infra.b"}, "infra.b": {"infra.c"}, "infra.c": {"infra.a"}, "infra.d": set()}) == [
        ["infra.a", "infra.b", "infra.c"]]
    assert imports_of("from . import metrics\n", "pipelines.replay.fraud") == {"pipelines.replay",
                                                                                "pipelines.replay.metrics"}
