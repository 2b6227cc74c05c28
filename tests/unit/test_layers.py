"""The layers of src/scbundle, read from the imports themselves (docs/architecture.md).

    cli, web -> steps -> ops -> bundle -> stages -> site -> db -> core

web (the console) is a front end at the level of cli: it imports neither cli nor is imported
by anything but the `scbundle web` command (cli/webcmd.py).

A module imports from its own package or from a package below it, never above; no step
module imports another step module (they share steps/common.py, collect.py, replay.py,
loop.py); the module import graph has no cycle. Imports under ``if TYPE_CHECKING:`` are
annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ORDER = ["core", "db", "site", "stages", "bundle", "ops", "steps", "cli", "web"]
LEVEL = {name: i for i, name in enumerate(ORDER)} | {"web": ORDER.index("cli")}
PEER_IMPORTS = {("scbundle.cli.webcmd", "web")}  # the one module of a front end that serves another
STEP_HELPERS = {"common", "collect", "products", "replay", "loop"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, src: Path, modules: set[str]) -> set[str]:
    """Every scbundle module ``path`` imports, at any depth (function-level imports count)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    me = module_name(path, src)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "scbundle")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "scbundle":
                continue
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in modules else mod)
    out.discard(me)
    return out


def import_graph(src: Path) -> dict[str, set[str]]:
    files = [p for p in src.joinpath("scbundle").rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p, src) for p in files}
    return {module_name(p, src): imports_of(p, src, modules) for p in files}


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def loose_modules(graph: dict[str, set[str]]) -> list[str]:
    return sorted(m for m in graph if m != "scbundle" and layer(m) is None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for mod, deps in sorted(graph.items()):
        here = layer(mod)
        for dep in sorted(deps):
            there = layer(dep)
            if here is None or there is None or here == there:
                continue
            if LEVEL[there] > LEVEL[here] or (LEVEL[there] == LEVEL[here] and (mod, there) not in PEER_IMPORTS):
                wrong.append(f"{mod} ({here}) imports {dep} ({there})")
    return wrong


def step_to_step(graph: dict[str, set[str]]) -> list[str]:
    def is_step(mod: str) -> bool:
        parts = mod.split(".")
        return len(parts) == 3 and parts[1] == "steps" and parts[2] not in STEP_HELPERS

    return [f"{m} imports {d}" for m, deps in sorted(graph.items()) if is_step(m) for d in sorted(deps) if is_step(d)]


def cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                found.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


GRAPH = import_graph(SRC)


def test_every_module_sits_in_a_layer():
    assert not loose_modules(GRAPH), f"modules outside the layer packages {ORDER}: {loose_modules(GRAPH)}"


def test_imports_go_downwards_only():
    assert not upward_imports(GRAPH), "imports upwards:\n" + "\n".join(upward_imports(GRAPH))


def test_no_step_imports_another_step():
    assert not step_to_step(GRAPH), "\n".join(step_to_step(GRAPH))


def test_no_import_cycles():
    assert not cycles(GRAPH), "import cycles:\n" + "\n".join(cycles(GRAPH))


def test_the_checks_find_each_kind_of_breach(tmp_path):
    """The checker on a small tree that breaks every rule once."""
    pkg = tmp_path / "scbundle"
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/app.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scbundle.db import x\n",
        "db/__init__.py": "",
        "db/x.py": "def f():\n    from scbundle.steps import exec\n",  # upwards, inside a function
        "steps/__init__.py": "",
        "steps/exec.py": "from scbundle.steps.poll import g\nfrom scbundle.db import x\n",  # a step importing a step
        "steps/poll.py": "from . import exec\n",  # relative, and a cycle with exec
        "demo.py": "",  # outside every layer
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(tmp_path)
    assert "scbundle.db.x" not in graph["scbundle.core.app"]  # annotations only
    assert loose_modules(graph) == ["scbundle.demo"]
    assert upward_imports(graph) == ["scbundle.db.x (db) imports scbundle.steps.exec (steps)"]
    assert step_to_step(graph) == ["scbundle.steps.exec imports scbundle.steps.poll", "scbundle.steps.poll imports scbundle.steps.exec"]
    assert any("scbundle.steps.exec -> scbundle.steps.poll -> scbundle.steps.exec" in c for c in cycles(graph))


def test_web_sits_beside_cli():
    """The console may use what cli uses; cli reaches it only through the `web` command, and
    it never imports cli."""
    graph = {
        "scbundle.web.app": {"scbundle.steps.status", "scbundle.cli.render"},
        "scbundle.cli.webcmd": {"scbundle.web.server"},
        "scbundle.cli.runs": {"scbundle.web.views"},
    }
    assert upward_imports(graph) == [
        "scbundle.cli.runs (cli) imports scbundle.web.views (web)",
        "scbundle.web.app (web) imports scbundle.cli.render (cli)",
    ]
