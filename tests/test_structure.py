"""The house's structure: no import circle among farm's modules, and no file in farm/ over 600 lines.

Imports are read with `ast` from every module of farm/, at any depth (a function-level import counts as much
as a top-level one: it is the same dependency, only later), plus `importlib.import_module(...)`: with a string
literal, that module; with anything else (`WORLDS[name]`, a table of module names), every farm module named by a
string in the calling module or in the module each name in the argument was imported from (farm.worlds for
WORLDS). `from pkg import name`
depends on `pkg.name` when that is a module, else on `pkg`; importing `pkg.sub` is not counted as depending on
`pkg/__init__.py` (Python runs it first, but a package that re-exports its modules is not a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

FARM = Path(__file__).resolve().parent.parent / "farm"
MAX_LINES = 600

# Imports that close a circle today, in files other teams own, each with who removes it. The check runs on the
# graph without them; empty this when they are gone.
KNOWN_CIRCLE_EDGES: dict[tuple[str, str], str] = {}

# Files over MAX_LINES today that are not split yet, each with the reason. Empty this when they are split.
LONG_FILES: dict[str, str] = {}


def module_names() -> dict[str, Path]:
    out = {}
    for f in sorted(FARM.rglob("*.py")):
        parts = list(f.relative_to(FARM.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The farm module that `import name` loads last (a name inside a module belongs to the module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_import_module(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (isinstance(f, ast.Name)
                                                                            and f.id == "import_module")


def import_graph() -> dict[str, set[str]]:
    """module → the farm modules it imports (see the module docstring for what counts)."""
    modules = module_names()
    trees = {m: ast.parse(f.read_text(), str(f)) for m, f in modules.items()}
    named = {m: {n.value for n in ast.walk(t) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and n.value in modules} for m, t in trees.items()}
    graph: dict[str, set[str]] = {}
    for m, tree in trees.items():
        package = m if modules[m].name == "__init__.py" else m.rpartition(".")[0]
        deps: set[str] = set()
        origin: dict[str, str] = {}  # a name bound by `from X import name` → X
        tables: set[str] = set()  # names used in a non-literal import_module argument
        dynamic = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
                origin.update({a.asname or a.name: base for a in node.names})
            elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    deps.add(arg.value)
                else:
                    dynamic = True
                    tables |= {n.id for n in ast.walk(arg) if isinstance(n, ast.Name)}
        owners = {o for d in deps if d.startswith("farm") and (o := _owner(d, modules)) and o != m}
        if dynamic:  # a module named by a table: those named here and in the tables' own modules
            sources = {m} | {o for t in tables if (o := _owner(origin.get(t, ""), modules))}
            owners |= {t for src in sources for t in named.get(src, set()) if t != m}
        graph[m] = owners
    return graph


def circles(graph: dict[str, set[str]]) -> list[tuple[set[str], list[str]]]:
    """The strongly connected components of more than one module (Tarjan), each with one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(c, _cycle_in(c, graph)) for c in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module, as a path that ends where it starts (breadth first)."""
    start = min(component)
    paths = {w: [start, w] for w in sorted(graph[start] & component)}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "farm.annotators.context" in graph["farm.annotators.judge"]  # top-level `from ... import`
    assert "farm.annotators.loader" in graph["farm.annotators.engine"]  # a function-level import
    assert "farm.worlds.tasks" in graph["farm.annotators.loader"]  # importlib.import_module(WORLDS[world])
    assert "farm.annotators.noise" in graph["farm.annotators.pool"]  # `from farm.annotators import noise`


def test_circles_are_found_and_named():
    found = circles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()})
    assert found == [({"a", "b", "c"}, ["a", "b", "c", "a"])]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_farm():
    graph = import_graph()
    for a, b in KNOWN_CIRCLE_EDGES:
        graph[a].discard(b)
    found = [cycle for _, cycle in circles(graph)]
    assert not found, "import circles: " + "; ".join(" → ".join(c) for c in found)


def test_known_circle_edges_are_still_there():
    # an entry whose import is gone is stale: remove it from KNOWN_CIRCLE_EDGES
    graph = import_graph()
    assert [e for e in KNOWN_CIRCLE_EDGES if e[1] not in graph.get(e[0], set())] == []


def test_no_file_in_farm_over_600_lines():
    lengths = {str(f.relative_to(FARM.parent)): len(f.read_text().splitlines()) for f in FARM.rglob("*.py")}
    over = {f: n for f, n in sorted(lengths.items()) if n > MAX_LINES and f not in LONG_FILES}
    assert not over, f"files over {MAX_LINES} lines (split them by subject): {over}"
    assert [f for f in LONG_FILES if lengths.get(f, 0) <= MAX_LINES] == []  # stale entries


def test_models_import_nothing_from_methods():
    # import direction: methods → models, never back (the log-prob maths lives in farm/models/logprobs.py)
    graph = import_graph()
    up = {m: sorted(d for d in deps if d.startswith("farm.methods")) for m, deps in graph.items()
          if m.startswith("farm.models")}
    assert {m: d for m, d in up.items() if d} == {}
    from farm.methods import maths
    from farm.models import logprobs

    assert maths.response_logprobs is logprobs.response_logprobs  # one definition, re-exported
