"""Attacks, registered by name in :data:`ATTACKS` (importing this package registers them)."""

from privtool.attacks import (  # noqa: F401,E402  (registration)
    dlg,
    iga,
    inversion,
    mia_attacks,
    rmia,
)
from privtool.attacks.base import ATTACKS, Attack, AttackConfig, Target, attack_settings

__all__ = ["ATTACKS", "Attack", "AttackConfig", "Target", "attack_settings"]
