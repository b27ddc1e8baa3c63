"""The house's layering (docs/SPEC.md §1, issue 18): the CLI and the stages sit on top of the
library; nothing below them imports them, and the membership attacks and the reference store
share their signal helpers instead of importing each other."""

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


def test_membership_and_reference_store_do_not_import_each_other():
    membership = _imports(PKG / "attacks" / "membership.py")
    store = _imports(PKG / "attacks" / "reference_store.py")
    assert "privtool.attacks.membership" not in store
    assert "privtool.attacks.signals" in store
    # the attack frame may ask the store for signals; the store never needs the attacks
    assert "privtool.attacks.reference_store" in membership
