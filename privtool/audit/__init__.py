"""``privtool audit``: how private a training recipe really is, measured with canaries.

:mod:`~privtool.audit.canaries` builds and scores the canaries (input / gradient) inside the
run's own mechanism, :mod:`~privtool.audit.estimators` turns scores into ε lower bounds (one run:
Steinke et al. 2023; many runs: Clopper–Pearson and the GDP fit), :mod:`~privtool.audit.run`
re-trains the recipe and reports the ε sandwich: audited ε (lower) ≤ accounted ε (upper).
"""
