"""Image autoregressive models (IARs): tiny VAR-, RAR- and MAR-style targets and their privacy
attacks (thesis ch. 9): LLM MIAs on per-token log-probabilities (plain and CFG difference),
dataset inference without a classifier, prefix extraction, and the output-noise mitigation.

Importing this package registers the ``iar-*`` attacks with ``genleak.attacks.get_attack``.

    from genleak.iar import train_iar, IARTrainConfig, load_iar_target
    from genleak.attacks import get_attack
    score = get_attack("iar-mink-cfg", k=0.2).score(target, images, ids, cond=labels)
"""

from genleak.iar import attacks as _attacks  # noqa: F401  (registers the iar-* attacks)
from genleak.iar.target import IARTarget, RARTarget, VARTarget, is_iar_folder, load_iar_target
from genleak.iar.train import IARTrainConfig, train_iar, train_tokenizer

__all__ = [
    "IARTarget",
    "IARTrainConfig",
    "RARTarget",
    "VARTarget",
    "is_iar_folder",
    "load_iar_target",
    "train_iar",
    "train_tokenizer",
]
