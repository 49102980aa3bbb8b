"""The package's layering, read from the source: every import, function-level ones included.

- no import cycles between gdstep's modules;
- the core (everything but the app, `gdstep.tui`, and the two entry points that open it)
  never imports Textual or `gdstep.tui`, not even inside a function;
- `gdstep.script` never imports the app: the command line hands it what it needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gdstep"
# The entry points that open the app: the command line, and attach mode when a breakpoint fires.
OPENS_THE_APP = {"gdstep.cli", "gdstep.debugger"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module `name` imports, at any depth of its code (gdstep's modules and others)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return out


def graph() -> dict[str, set[str]]:
    return {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def is_app(name: str) -> bool:
    return name == "gdstep.tui" or name.startswith("gdstep.tui.")


def test_the_walker_sees_function_level_imports():
    edges = graph()
    assert "gdstep.tui.app" in edges["gdstep.cli"]            # imported inside main()
    assert len(MODULES) > 40


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_reaches_textual_or_the_app():
    edges = graph()
    core = [n for n in MODULES if not is_app(n) and n not in OPENS_THE_APP]
    for name in core:
        bad = sorted(m for m in imports(name) if m == "textual" or m.startswith("textual.") or is_app(m))
        assert not bad, f"{name} imports {bad}"
    # nor through another module of the core
    reach: set[str] = set()
    todo = list(core)
    while todo:
        v = todo.pop()
        for w in edges[v]:
            if w not in reach and not is_app(w) and w not in OPENS_THE_APP:
                reach.add(w)
                todo.append(w)
    assert not any(is_app(w) for v in reach | set(core) for w in edges[v]), "a core module reaches gdstep.tui"


def test_scripts_never_import_the_app():
    for name in MODULES:
        if name.startswith("gdstep.script"):
            assert not any(is_app(m) for m in imports(name)), name


def test_every_package_ships_in_the_wheel():
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"split these: {long}"
