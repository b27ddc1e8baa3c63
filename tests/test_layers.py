"""The house's layering (docs/SPEC.md §1, issue 18): the CLI and the stages sit on top of the
library; nothing below them imports them, the membership attacks and the model store
(privtool.store) share their signal helpers instead of importing each other, and no module
import circle exists."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "privtool"
TOP = {"privtool.cli", "privtool.__main__"}


def _top(mod: str) -> bool:
    """The CLI package (every ``privtool.cli.*`` module) and ``python -m privtool``."""
    return mod in TOP or mod.startswith("privtool.cli.")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def test_nothing_below_the_stages_imports_them_or_the_cli():
    offenders = []
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        if _top(mod) or mod.startswith("privtool.stages"):
            continue
        bad = {
            m
            for m in _imports(path)
            if _top(m) or m == "privtool.stages" or m.startswith("privtool.stages.")
        }
        if bad:
            offenders.append((mod, sorted(bad)))
    assert offenders == []


def test_library_core_never_imports_typer():
    offenders = [
        _module(p) for p in PKG.rglob("*.py") if not _top(_module(p)) and "typer" in _imports(p)
    ]
    assert offenders == []


def test_membership_and_the_store_do_not_import_each_other():
    membership = _imports(PKG / "attacks" / "membership.py")
    store = set().union(*(_imports(p) for p in (PKG / "store").rglob("*.py")))
    assert "privtool.attacks.membership" not in store
    assert "privtool.attacks.signals" in store
    # the attack frame may ask the store for signals; the store never needs the attacks
    assert "privtool.store" in membership


def test_the_store_imports_no_attack_but_the_shared_signals():
    """privtool.store (identity, storage, build, back ends) sits below the attacks: of
    privtool.attacks it may import only the loss/logit helpers (attacks.signals), anywhere in
    a module, function bodies included."""
    offenders = sorted(
        (_module(p), m)
        for p in (PKG / "store").rglob("*.py")
        for m in _imports(p)
        if (m == "privtool.attacks" or m.startswith("privtool.attacks."))
        and m != "privtool.attacks.signals"
    )
    assert offenders == []


def _top_level_imports(path: Path) -> set[str]:
    """The privtool modules ``path`` imports when it is imported: statements at module level
    and in class bodies (``if``/``try`` blocks included, ``if TYPE_CHECKING:`` not), never in
    function bodies. ``from P import name`` counts as importing ``P.name`` when that is a
    module. An import of ``a.b.c`` is an edge to ``a.b.c`` only, not to its parent packages
    (a package's ``__init__`` importing its own submodules is not a circle)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    names.add(sub if _is_module(sub) else base)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With, ast.ClassDef, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return {n for n in names if n == "privtool" or n.startswith("privtool.")}


def _is_module(name: str) -> bool:
    rel = PKG.parent.joinpath(*name.split("."))
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_privtool_modules():
    """The module graph of top-level imports (what importing a module runs) is acyclic."""
    graph = {_module(p): _top_level_imports(p) - {_module(p)} for p in PKG.rglob("*.py")}
    assert {"privtool.store.ensure", "privtool.attacks.signals"} <= set(graph)
    assert "privtool.store.storage" in graph["privtool.store.ensure"]
    assert _cycles(graph) == []


def test_no_import_circle_even_through_imports_inside_functions():
    """Counting the imports that functions make when they run (lazy imports), too: a lazy import
    that closes a circle only hides it (issue 18 Done-when: no import circle)."""
    graph = {_module(p): _imports(p) - {_module(p)} for p in PKG.rglob("*.py")}
    graph = {m: {n for n in deps if n in graph} for m, deps in graph.items()}
    assert "privtool.mechanisms" in graph["privtool.epsilon"]  # lazy, counted
    assert _cycles(graph) == []
