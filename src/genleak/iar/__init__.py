"""Image autoregressive models (IARs): tiny VAR-, RAR- and MAR-style targets and their privacy
attacks (thesis ch. 9): LLM MIAs on per-token log-probabilities (plain and CFG difference),
dataset inference without a classifier, prefix extraction, and the output-noise mitigation.

``genleak.attacks.get_attack`` knows the ``iar-*`` attacks (its registry imports ``genleak.attacks.iar``).

    from genleak.iar import train_iar, IARTrainConfig, load_iar_target
    from genleak.attacks import get_attack
    from genleak.scoring import score_split
    attack = get_attack("iar-mink-cfg", k=0.2)
    scores = score_split(target, split, [attack])[attack]  # .members / .nonmembers (labels from the split)
"""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "IARTarget": "genleak.targets.iar",
    "RARTarget": "genleak.targets.iar",
    "VARTarget": "genleak.targets.iar",
    "load_iar_target": "genleak.targets.iar",
    "IARTrainConfig": "genleak.iar.train",
    "train_iar": "genleak.iar.train",
    "train_tokenizer": "genleak.iar.train",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
