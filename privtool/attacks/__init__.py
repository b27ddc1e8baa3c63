"""Attacks, registered by name in :data:`ATTACKS` (importing this package registers them)."""

from privtool.attacks.base import ATTACKS, Attack, AttackConfig, Target, attack_settings

__all__ = ["ATTACKS", "Attack", "AttackConfig", "Target", "attack_settings"]
