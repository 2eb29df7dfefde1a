"""The import graph of kwsdeploy: no cycle between modules or packages (function-level imports count),
and the torch-free parts (runtime, manifest, contract) reach no torch through any import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kwsdeploy"
TORCH_FREE = ("kwsdeploy.runtime", "kwsdeploy.manifest", "kwsdeploy.contract", "kwsdeploy.trt", "kwsdeploy.exporters.jetson",
              "kwsdeploy.assets.jetson")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The kwsdeploy module a dotted name lives in (the longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(kwsdeploy modules, external top-level names) imported anywhere in `module`, functions included."""
    path, is_pkg = MODULES[module]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for t in targets:
            if t == "kwsdeploy" or t.startswith("kwsdeploy."):
                owner = _owner(t)
                if owner and owner != module:
                    inner.add(owner)
            else:
                outer.add(t.split(".")[0])
    return inner, outer


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def _package(module: str) -> str:
    """The first level below kwsdeploy: `kwsdeploy.runtime.ort` -> `kwsdeploy.runtime`."""
    return ".".join(module.split(".")[:2])


def test_the_graph_finder_sees_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    inner, outer = imports_of("kwsdeploy.runtime.verify")  # module-level and relative forms resolve
    assert {"kwsdeploy.runtime.bundle", "kwsdeploy.runtime.ort", "kwsdeploy.manifest"} <= inner
    assert "numpy" in outer


def test_no_import_cycle_between_modules():
    assert _cycles({m: inner for m, (inner, _) in GRAPH.items()}) == []


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for m, (inner, _) in GRAPH.items():
        for t in inner:
            a, b = _package(m), _package(t)
            if a != b and "kwsdeploy" not in (a, b):
                edges.setdefault(a, set()).add(b)
    assert _cycles(edges) == []


@pytest.mark.parametrize("root", TORCH_FREE)
def test_torch_free_parts_reach_no_torch(root):
    start = [m for m in MODULES if m == root or m.startswith(root + ".")]
    seen, todo, via = set(start), list(start), {}
    while todo:
        m = todo.pop()
        inner, outer = GRAPH[m]
        assert not outer & {"torch", "torchaudio"}, f"{m} imports torch (reached from {via.get(m, m)})"
        for t in inner - seen:
            seen.add(t)
            via[t] = via.get(m, m)
            todo.append(t)
