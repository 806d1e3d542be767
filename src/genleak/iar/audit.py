"""One privacy audit of an IAR target: calibrated MIAs, dataset inference, extraction, quality.

The pieces the CLI, the experiment runner and the noise mitigation share. Data roles:

* calibration members / non-members: choose each attack's hyperparameters (K, eps, CAMIA signal)
  and which attack is "best" — never the evaluation labels;
* evaluation members / non-members: every reported MIA figure (``genleak.metrics`` only);
* suspect set P = all members, validation set U = all non-members: dataset inference;
* members / non-members again for extraction (non-members = the false-positive check);
* public images (neither members nor non-members): quality reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.attacks.iar import Calibration, IARFeatures, calibrate, features_dict
from genleak.data import ImageSet, MembershipSplit
from genleak.errors import GenleakError
from genleak.scoring import ScoreCache, score_images


@dataclass
class AuditData:
    """The image sets of one audit (see the module docstring)."""

    cal_members: ImageSet
    cal_nonmembers: ImageSet
    eval_members: ImageSet
    eval_nonmembers: ImageSet
    public: ImageSet | None = None

    @property
    def members(self) -> ImageSet:
        return self.cal_members.concat(self.eval_members)

    @property
    def nonmembers(self) -> ImageSet:
        return self.cal_nonmembers.concat(self.eval_nonmembers)

    @classmethod
    def from_split(cls, split: MembershipSplit, public: ImageSet | None = None, cal_fraction: float = 0.5,
                   seed: int = 0) -> AuditData:
        """Cut both sides of ``split`` into a calibration and an evaluation part at random."""
        if not 0.0 < cal_fraction < 1.0:
            raise GenleakError(f"calibration fraction must be in (0, 1), got {cal_fraction}")
        rng = np.random.default_rng(seed)

        def cut(s: ImageSet) -> tuple[ImageSet, ImageSet]:
            if len(s) < 4:
                raise GenleakError(f"need at least 4 images per side to split off calibration data, got {len(s)}")
            perm = rng.permutation(len(s))
            k = max(2, int(round(cal_fraction * len(s))))
            return s[sorted(perm[:k].tolist())], s[sorted(perm[k:].tolist())]

        cm, em = cut(split.members)
        cn, en = cut(split.nonmembers)
        return cls(cm, cn, em, en, public)


@dataclass
class FeatureSets:
    """IAR features of the four audit sets (plain and CFG), computed once."""

    cal_members: dict[str, np.ndarray]
    cal_nonmembers: dict[str, np.ndarray]
    eval_members: dict[str, np.ndarray]
    eval_nonmembers: dict[str, np.ndarray]

    def members(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([self.cal_members[k], self.eval_members[k]]) for k in self.eval_members}

    def nonmembers(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([self.cal_nonmembers[k], self.eval_nonmembers[k]]) for k in self.eval_nonmembers}


def set_features(target: Any, images: ImageSet, *, seed: int = 0, batch_size: int = 64,
                 mar: dict[str, Any] | None = None, progress: bool = False,
                 cache: ScoreCache | str | Path | None = None) -> dict[str, np.ndarray]:
    """The IAR features (:class:`IARFeatures`) of one set, through ``genleak.scoring`` (labels from the
    data; with ``cache``, a rerun or another audit of the same samples recomputes nothing)."""
    attack = IARFeatures.for_target(target, mar=mar)
    scored = score_images(target, images, [attack], cache=cache, seed=seed, batch_size=batch_size, progress=progress,
                          desc="iar features")
    return features_dict(attack, scored[attack].values)


def compute_features(target: Any, data: AuditData, *, seed: int = 0, batch_size: int = 64,
                     mar: dict[str, Any] | None = None, progress: bool = False,
                     cache: ScoreCache | str | Path | None = None) -> FeatureSets:
    """:func:`set_features` of the four sets."""
    def f(s: ImageSet) -> dict[str, np.ndarray]:
        return set_features(target, s, seed=seed, batch_size=batch_size, mar=mar, progress=progress, cache=cache)

    return FeatureSets(f(data.cal_members), f(data.cal_nonmembers), f(data.eval_members), f(data.eval_nonmembers))


def mia_report(features: FeatureSets) -> dict[str, Any]:
    """Calibrate hyperparameters on the calibration sets, evaluate every attack on the evaluation
    sets; the "best" attack (plain, CFG, overall) is also chosen on the calibration sets."""
    from genleak.attacks.iar import feature_name
    from genleak.metrics import evaluate

    cal: Calibration = calibrate(features.cal_members, features.cal_nonmembers)
    attacks: dict[str, Any] = {}
    for attack, params in cal.params.items():
        fam = attack.removeprefix("iar-").removesuffix("-cfg")
        name = feature_name(fam, params, attack.endswith("-cfg"))
        rep = evaluate(features.eval_members[name], features.eval_nonmembers[name])
        cal_row = cal.table[name]
        attacks[attack] = {"params": params, "auc": rep.auc, "tpr_at_1pct_fpr": rep.tpr_at_1pct_fpr,
                           "tpr_at_0_fpr": rep.tpr_at_0_fpr, "asr": rep.asr,
                           "cal_auc": cal_row["auc"], "cal_tpr_at_1pct_fpr": cal_row["tpr@1%fpr"]}
    out: dict[str, Any] = {"attacks": attacks,
                           "n_eval_members": len(next(iter(features.eval_members.values()))),
                           "n_eval_nonmembers": len(next(iter(features.eval_nonmembers.values())))}
    for key, pick in (("best", lambda a: True), ("best_plain", lambda a: not a.endswith("-cfg")),
                      ("best_cfg", lambda a: a.endswith("-cfg"))):
        names = [a for a in attacks if pick(a)]
        if names:
            best = max(names, key=lambda a: (attacks[a]["cal_tpr_at_1pct_fpr"], attacks[a]["cal_auc"]))
            out[key] = {"attack": best, **attacks[best]}
    # Oracle view (what the thesis tables report: the best attack on the evaluation data itself)
    out["max_tpr_at_1pct_fpr"] = max(a["tpr_at_1pct_fpr"] for a in attacks.values())
    return out


def di_report(features: FeatureSets, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Table 9.5.3 rows (see :func:`genleak.iar.inference.iar_di_table`): P = members, U = non-members."""
    from genleak.iar.inference import iar_di_table

    rows = iar_di_table(features.members(), features.nonmembers(), n_resamples=n_resamples, seed=seed)
    return {k: v.to_dict() for k, v in rows.items()}


def sample_images(target: Any, n_per_class: int, *, seed: int = 0, cfg_scale: float = 1.0,
                  temperature: float = 1.0, batch_size: int = 100) -> tuple[torch.Tensor, np.ndarray]:
    """Class-balanced samples (temperature sampling) -> decoded images and their labels."""
    labels = torch.arange(target.num_classes).repeat_interleave(n_per_class)
    gen = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        tokens = target.generate(y, cfg_scale=cfg_scale, greedy=False, temperature=temperature, generator=gen)
        images.append(target.decode(tokens).cpu())
    return torch.cat(images), labels.numpy()


@dataclass
class QualityJudge:
    """FID in the feature space of a small digit classifier trained on *public* images, plus that
    classifier's accuracy on class-conditional samples (a stand-in for the thesis' FID on 10k
    generations, supp. D.11.1; comparable only between models judged by the same judge)."""

    extractor: Any
    reference: ImageSet

    @classmethod
    def train(cls, public: ImageSet, seed: int = 0, steps: int = 400) -> QualityJudge:
        from genleak.quality import train_encoder

        if public.labels is None:
            raise GenleakError("the quality judge needs labelled public images")
        return cls(train_encoder(public.images, public.labels, steps=steps, seed=seed), public)

    def __call__(self, images: torch.Tensor, labels: Sequence[int]) -> dict[str, float]:
        from genleak.quality import frechet_distance

        model = self.extractor.model
        with torch.inference_mode():
            pred = model.head(model.features(images)).argmax(1).numpy()
        fid = frechet_distance(self.extractor(self.reference.images), self.extractor(images))
        return {"fid": fid, "class_accuracy": float((pred == np.asarray(labels)).mean()),
                "n_generated": int(images.shape[0])}


# Table 9.5.2 (supp. D.8): the MAR attack improvements, one at a time. Baseline = the training-time
# loss: mask ratio 0.86 (the training average, Table D.8.1), random timestep, 4 noise draws.
MAR_ABLATION: tuple[tuple[str, dict[str, Any]], ...] = (
    ("baseline", {"mask_ratio": 0.86, "timestep": None, "noise_draws": 4}),
    ("+ adjusted mask (0.95)", {"mask_ratio": 0.95, "timestep": None, "noise_draws": 4}),
    ("+ fixed timestep (500)", {"mask_ratio": 0.95, "timestep": 500, "noise_draws": 4}),
    ("+ 64 noise draws", {"mask_ratio": 0.95, "timestep": 500, "noise_draws": 64}),
)


def mar_ablation(target: Any, data: AuditData, *, mask_draws: int = 4, seed: int = 0,
                 steps: Sequence[tuple[str, dict[str, Any]]] = MAR_ABLATION) -> list[dict[str, Any]]:
    """Loss attack on a MAR target under each row of Table 9.5.2 (evaluation sets, genleak.metrics)."""
    from genleak.attacks import get_attack
    from genleak.metrics import evaluate

    rows = []
    m, n = data.eval_members, data.eval_nonmembers
    for label, opts in steps:
        a = get_attack("iar-loss", mask_draws=mask_draws, **opts)
        rep = evaluate(*(score_images(target, side, [a], seed=seed, progress=False)[a].values for side in (m, n)))
        rows.append({"setting": label, **opts, "auc": rep.auc, "tpr_at_1pct_fpr": rep.tpr_at_1pct_fpr})
    return rows
