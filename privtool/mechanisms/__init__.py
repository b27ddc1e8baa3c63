"""Training mechanisms, registered by name in :data:`MECHANISMS` (import registers them)."""

from privtool.mechanisms import gaussian, none, unit, vmf  # noqa: F401  (registration)
from privtool.mechanisms.base import MECHANISMS, Mechanism, Schedule

__all__ = ["MECHANISMS", "Mechanism", "Schedule"]
