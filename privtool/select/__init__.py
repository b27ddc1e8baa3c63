"""Privacy-aware active learning on public data (paper 2): selection strategies
(:data:`STRATEGIES`: random, entropy, margin, diverse-public, near-private), DP-PCA and noisy
support counts (:mod:`~privtool.select.dp_pca`), budget composition and checkpoint choice
(:mod:`~privtool.select.budget`), fine-tuning (:mod:`~privtool.select.finetune`) and the
accuracy-versus-labels curve (:mod:`~privtool.select.curve`). No typer/rich here."""

from privtool.select.strategies import STRATEGIES, Selection, Strategy, Task

__all__ = ["STRATEGIES", "Selection", "Strategy", "Task"]
