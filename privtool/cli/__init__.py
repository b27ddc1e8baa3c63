"""The ``privtool`` command line: thin Typer commands over the library.

Each command parses options, calls one library function and prints. A
:class:`~privtool.errors.PrivtoolError` becomes one line on stderr and exit code 1; usage
errors exit 2. ``--json`` puts exactly one JSON object on stdout; progress goes to stderr.
Torch and the library are imported inside commands so ``privtool --help`` is instant.

Commands live in sibling modules (:mod:`privtool.cli.training`, :mod:`privtool.cli.attacks`,
:mod:`privtool.cli.results`, :mod:`privtool.cli.data`); importing this package registers them
on :data:`app` in the order ``privtool --help`` lists them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from privtool.cli.common import app

# registration order is the order of `privtool --help`
for _module in ("training", "attacks", "results", "data"):
    import_module(f"privtool.cli.{_module}")

__all__ = ["app", "main"]


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (DVC, CI, ``kill``) ends a stage like Ctrl-C: the staged output is removed and
    ``--out`` keeps its previous run (:class:`~privtool.errors.Terminated`)."""
    from privtool.errors import Terminated

    raise Terminated


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
