"""Third-party plug-ins: modules that register mechanisms (or models, attacks, ...) in privtool's
registries with no edit to privtool (docs/SPEC.md §5).

Two sources, loaded by the CLI at start-up, before any help text or choice is built:

* the entry points of group ``privtool.plugins`` of installed distributions (``[project.
  entry-points."privtool.plugins"] laplace = "my_pkg.laplace"``): each is loaded (imported);
* the modules named in the environment variable ``PRIVTOOL_PLUGINS`` (comma-separated import
  names, e.g. ``PRIVTOOL_PLUGINS=my_pkg.laplace,other``), imported in that order.

A module registers what it brings on import (``@MECHANISMS.register("laplace")``). Loading is
idempotent: a module already loaded is not imported again. A name that does not import is a
:class:`~privtool.errors.PrivtoolError` naming it and the reason.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from privtool.errors import PrivtoolError

GROUP = "privtool.plugins"
ENV = "PRIVTOOL_PLUGINS"

_loaded: set[str] = set()


def plugin_names(env: str | None = None) -> list[str]:
    """The module names in ``PRIVTOOL_PLUGINS`` (or ``env``), blanks dropped."""
    raw = os.environ.get(ENV, "") if env is None else env
    return [n.strip() for n in raw.split(",") if n.strip()]


def load_plugins(env: str | None = None) -> list[str]:
    """Load every ``privtool.plugins`` entry point and ``PRIVTOOL_PLUGINS`` module once;
    returns the names loaded by this call."""
    done = []
    for ep in entry_points(group=GROUP):
        key = f"entry point {ep.name} = {ep.value}"
        if key in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:  # a broken plug-in: one line, not a traceback
            raise PrivtoolError(
                f"cannot load privtool plug-in {ep.name!r} ({ep.value}, entry point group "
                f"{GROUP}): {type(e).__name__}: {_first_line(e)}"
            ) from None
        _loaded.add(key)
        done.append(ep.name)
    for name in plugin_names(env):
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:
            raise PrivtoolError(
                f"cannot load privtool plug-in {name!r} named in {ENV}: "
                f"{type(e).__name__}: {_first_line(e)}; give importable module names, comma-separated"
            ) from None
        _loaded.add(name)
        done.append(name)
    return done


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
