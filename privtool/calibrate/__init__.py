"""Calibration: every run and attack result joined into tables that set mechanisms with
incomparable ε side by side on one empirical scale (SPEC §8; paper 1 Tables 4–7, paper 3
Figs 6–8).

``collect`` finds the stage directories (each attack's metrics read as its result object,
:mod:`privtool.results`), ``rows`` joins them into one row per attacked model, ``tables.build``
derives the views (``paper``: paper 1's tables; ``comparisons``: equivalent ε and the
accuracy-matched comparison; ``views``: membership exposure) as ``table.Table`` objects,
``equivalent`` holds the ε-matching maths, ``plots`` the figures, ``output`` writes them all.
"""

from privtool.calibrate.collect import Collection, collect
from privtool.calibrate.settings import CalibrateConfig, calibrate_settings
from privtool.calibrate.table import Table
from privtool.calibrate.tables import Calibration, build

__all__ = [
    "Calibration",
    "CalibrateConfig",
    "Collection",
    "Table",
    "build",
    "calibrate_settings",
    "collect",
]
