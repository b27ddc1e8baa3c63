"""Attacks, registered by name in :data:`ATTACKS` (importing this package registers them)."""

from privtool.attacks import (  # noqa: F401,E402  (registration)
    inversion,
    membership,  # noqa: F401,E402  (registration)
    reconstruction,
    rmia,  # noqa: F401,E402  (registration)
)
from privtool.attacks.base import ATTACKS, Attack, AttackConfig, Target, attack_settings

__all__ = ["ATTACKS", "Attack", "AttackConfig", "Target", "attack_settings"]
