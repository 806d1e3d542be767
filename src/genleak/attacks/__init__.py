"""Membership inference attacks: one module each, one registry by name (``get_attack``; entry points
``genleak.attacks`` in pyproject.toml name every attack class, so this package imports none of them)."""

from genleak.attacks.base import (
    Access,
    Attack,
    AttackConfig,
    NoiseSource,
    attack_class,
    available_attacks,
    get_attack,
    register_attack,
)

# The attacks of the core audit, in the order reports list them.
DEFAULT_ATTACKS: tuple[str, ...] = ("loss", "secmi", "pia", "pian", "sima")

__all__ = [
    "Access",
    "Attack",
    "AttackConfig",
    "DEFAULT_ATTACKS",
    "NoiseSource",
    "attack_class",
    "available_attacks",
    "get_attack",
    "register_attack",
]
