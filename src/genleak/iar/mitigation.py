"""Output-noise mitigation for IARs (thesis ch. 9.6, supp. D.11) and its before/after table.

The defense perturbs what the model outputs at inference: N(0, sigma^2) on every logit for VAR/RAR
and on every sampled continuous token for MAR (supp. D.11.1). It is a switch on the target
(``IARTarget.set_output_noise``), so every attack, DI, extraction and sampling path sees the
defended model without knowing about it. :func:`noise_sweep` measures, per sigma: MIA (calibrated
on the *defended* model's calibration split, as an adaptive attacker would), DI (minimum |P|),
extraction counts, and quality (FID in a public digit classifier's feature space and its class
accuracy on samples) — the four panels of fig. D.11.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from genleak.iar.audit import AuditData, QualityJudge, compute_features, di_report, mia_report, sample_images
from genleak.iar.extraction import IARExtractionConfig, extract_iar


def noise_sweep(
    target: Any,
    data: AuditData,
    sigmas: Sequence[float],
    *,
    judge: QualityJudge | None = None,
    n_per_class: int = 20,
    extraction: IARExtractionConfig | None = None,
    di_resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Audit ``target`` at each output-noise scale; the target's own setting is restored after."""
    original = target.output_noise
    rows = []
    try:
        for sigma in tqdm(list(sigmas), desc="noise sweep", disable=not progress, leave=False):
            target.set_output_noise(float(sigma), seed=seed)
            feats = compute_features(target, data, seed=seed)
            mia = mia_report(feats)
            di = di_report(feats, n_resamples=di_resamples, seed=seed)
            ext = extract_iar(target, data.members, data.nonmembers, extraction)
            row: dict[str, Any] = {
                "sigma": float(sigma),
                "mia_best": mia["best"],
                "mia_best_plain": mia.get("best_plain"),
                "mia_best_cfg": mia.get("best_cfg"),
                "mia_max_tpr_at_1pct_fpr": mia["max_tpr_at_1pct_fpr"],
                "di_min_size": {k: v["min_suspect_size"] for k, v in di.items()},
                "di_mean_p_at_max": {k: v["mean_p_at_max_size"] for k, v in di.items()},
                "extracted": ext.train.count,
                "false_positives": ext.validation.count if ext.validation is not None else None,
                "candidates": len(ext.train.candidate_ids),
            }
            if judge is not None:
                images, labels = sample_images(target, n_per_class, seed=seed)
                row["quality"] = judge(images, labels)
            rows.append(row)
    finally:
        target.set_output_noise(original, seed=seed)
    return rows


def noise_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown before/after table of a sweep (first row = the undefended model when sigma = 0)."""
    lines = ["| sigma | best MIA (cal.) | TPR@1%FPR | AUC | DI min |P| (cfg-sum / plain-sum / cfg-lr) | extracted (FP) | FID | class acc. |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["mia_best"]
        di = r["di_min_size"]
        q = r.get("quality") or {}

        def fmt(v: Any) -> str:
            return "none" if v is None else str(v)

        lines.append(
            f"| {r['sigma']:g} | {b['attack']} | {b['tpr_at_1pct_fpr']:.3f} | {b['auc']:.3f} | "
            f"{fmt(di.get('cfg-sum'))} / {fmt(di.get('plain-sum'))} / {fmt(di.get('cfg-lr'))} | "
            f"{r['extracted']}/{r['candidates']} ({fmt(r['false_positives'])}) | "
            f"{q.get('fid', float('nan')):.2f} | {q.get('class_accuracy', float('nan')):.3f} |"
        )
    return "\n".join(lines)
