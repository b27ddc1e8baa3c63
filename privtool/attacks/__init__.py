"""Attacks, registered by name in :data:`ATTACKS` (importing this package registers them)."""

from privtool.attacks.base import ATTACKS, Attack, AttackConfig, Target, attack_settings
from privtool.attacks import reconstruction, inversion  # noqa: F401,E402  (registration)
from privtool.attacks import membership  # noqa: F401,E402  (registration)
from privtool.attacks import rmia  # noqa: F401,E402  (registration)

__all__ = ["ATTACKS", "Attack", "AttackConfig", "Target", "attack_settings"]
