"""The IAR experiment runner behind ``genleak iar experiment`` and ``configs/iar_*.json``.

One config describes a whole study on one membership split: the tokenizer (trained on *public*
images, i.e. neither members nor non-members, so the tokenizer itself does not leak), the IAR
targets trained on the members, optionally a pixel DDPM trained on the same members with the same
number of epochs (the IAR-vs-DM comparison of thesis Tables 9.5.1/9.5.3/D.4.1), and the analyses:
calibrated MIAs (plain vs CFG difference), dataset inference (IAR sum and CDI classifier),
extraction at several prefix lengths, and the output-noise sweep. Everything lands in
``OUT/results.json`` and a readable ``OUT/summary.md``; trained targets are cached in
``OUT/targets/`` and reused on a rerun with the same settings.

Config keys (all optional except where noted; see ``configs/iar_*.json``)::

    name, description, notes, seed, source ({"kind": "digits", "size": 8}), members, nonmembers,
    stratify (class-stratified split, as benchmarks/weakfit.py draws it), calibration_fraction, tokenizer_steps,
    targets: [{"kind": "rar"|"var"|"mar", "steps": .., ...IARTrainConfig keys}],
    ddpm: {"steps": .., "block_out_channels": [..], "ema_decay": .., "attacks": [..]} or null,
    di_resamples, extraction: {"prefix_lens": [..], "top_k_per_class": .., "threshold": ..},
    mitigation: {"kinds": [..], "sigmas": [..], "mar_sigmas": [..], "n_per_class": ..},
    mar_attack: {"mask_ratio": .., "timestep": .., "noise_draws": .., "mask_draws": ..}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.config import read_config
from genleak.data import ImageSet, load_source, make_split
from genleak.errors import GenleakError
from genleak.iar.audit import AuditData, QualityJudge, compute_features, di_report, mia_report
from genleak.iar.extraction import IARExtractionConfig, extract_iar
from genleak.iar.train import IARTrainConfig, train_iar, train_tokenizer
from genleak.io import atomic_write_json, atomic_write_text

DDPM_ATTACKS: tuple[str, ...] = ("loss", "secmi", "pia", "pian", "sima")

KNOWN_KEYS = {"name", "description", "notes", "seed", "source", "members", "nonmembers", "stratify",
              "calibration_fraction", "tokenizer_steps", "targets", "ddpm", "di_resamples", "extraction", "mitigation",
              "mar_attack", "quality"}


def load_config(path: str | Path) -> dict[str, Any]:
    return read_config(path, known=KNOWN_KEYS, what="experiment config")


def public_images(source: ImageSet, *exclude: ImageSet) -> ImageSet:
    """The images of ``source`` that are in none of ``exclude`` (the tokenizer's training data)."""
    used = set()
    for s in exclude:
        used.update(s.ids)
    keep = [i for i, sid in enumerate(source.ids) if sid not in used]
    if not keep:
        raise GenleakError("no public images left for the tokenizer; use fewer members/non-members")
    return source[keep]


def ddpm_report(target: Any, data: AuditData, attacks: tuple[str, ...] = DDPM_ATTACKS, *, seed: int = 0,
                n_resamples: int = 1000, progress: bool = False) -> dict[str, Any]:
    """The pixel DDPM side of the comparison: genleak's DM attacks (paper defaults), the best one
    chosen on the calibration split; DI with the DM attack scores as features (CDI classifier and
    the IAR min-max sum)."""
    from genleak.attacks import get_attack
    from genleak.iar.inference import dataset_inference
    from genleak.metrics import auc, evaluate, tpr_at_fpr
    from genleak.scoring import score_images

    sets = {"cal_m": data.cal_members, "cal_n": data.cal_nonmembers, "eval_m": data.eval_members,
            "eval_n": data.eval_nonmembers}
    scores: dict[str, dict[str, np.ndarray]] = {k: {} for k in sets}
    for name in attacks:
        a = get_attack(name)
        for key, s in sets.items():
            scores[key][name] = score_images(target, s, [a], seed=seed, progress=progress)[a].values.astype(np.float64)
    rows = {}
    for name in attacks:
        rep = evaluate(scores["eval_m"][name], scores["eval_n"][name])
        rows[name] = {"auc": rep.auc, "tpr_at_1pct_fpr": rep.tpr_at_1pct_fpr, "tpr_at_0_fpr": rep.tpr_at_0_fpr,
                      "cal_auc": auc(scores["cal_m"][name], scores["cal_n"][name]),
                      "cal_tpr_at_1pct_fpr": tpr_at_fpr(scores["cal_m"][name], scores["cal_n"][name], 0.01)}
    best = max(rows, key=lambda a: (rows[a]["cal_tpr_at_1pct_fpr"], rows[a]["cal_auc"]))
    fp = {k: np.concatenate([scores["cal_m"][k], scores["eval_m"][k]]) for k in attacks}
    fu = {k: np.concatenate([scores["cal_n"][k], scores["eval_n"][k]]) for k in attacks}
    di = {m: dataset_inference(fp, fu, list(attacks), method=m, n_resamples=n_resamples, seed=seed).to_dict()
          for m in ("lr", "sum")}
    return {"attacks": rows, "best": {"attack": best, **rows[best]},
            "max_tpr_at_1pct_fpr": max(r["tpr_at_1pct_fpr"] for r in rows.values()), "di": di}


def group_aucs(target: Any, data: AuditData) -> dict[str, list[float]]:
    """AUC of the mean log-prob of each token group (VAR scale / RAR position) on the evaluation
    sets, plain and CFG difference."""
    from genleak.attacks.iar import group_scores
    from genleak.metrics import auc

    out = {}
    for cfg in (False, True):
        gm = group_scores(target, data.eval_members.images, data.eval_members.labels, cfg_diff=cfg)
        gn = group_scores(target, data.eval_nonmembers.images, data.eval_nonmembers.labels, cfg_diff=cfg)
        out["cfg" if cfg else "plain"] = [round(auc(gm[:, j], gn[:, j]), 4) for j in range(gm.shape[1])]
    return out


def _min_size(di: dict[str, Any]) -> int | None:
    sizes = [v["min_suspect_size"] for v in di.values() if v["min_suspect_size"] is not None]
    return min(sizes) if sizes else None


def run_experiment(config: dict[str, Any], out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run the study described by ``config``; returns (and writes) the results dictionary."""
    from genleak.iar.mitigation import noise_sweep, noise_table

    out = Path(out_dir)
    seed = int(config.get("seed", 0))
    spec = config.get("source", {"kind": "digits", "size": 8})
    source = load_source(spec)
    split = make_split(source, int(config.get("members", 64)), int(config.get("nonmembers", 576)), seed=seed,
                       source=spec, stratify=bool(config.get("stratify", False)), name=config.get("name", "iar"))
    public = public_images(source, split.members, split.nonmembers)
    data = AuditData.from_split(split, public, float(config.get("calibration_fraction", 0.5)), seed=seed)
    resamples = int(config.get("di_resamples", 1000))
    results: dict[str, Any] = {"format": "genleak.iar-experiment", "version": 1, "config": config,
                               "split": {"members": len(split.members), "nonmembers": len(split.nonmembers),
                                         "public": len(public), "fingerprint": split.fingerprint()},
                               "targets": {}}
    tokenizers: dict[str, torch.nn.Module] = {}
    judge = QualityJudge.train(public, seed=seed) if config.get("quality", True) else None
    ext_cfg = dict(config.get("extraction", {}))
    prefix_lens = ext_cfg.pop("prefix_lens", [None])
    mar_attack = config.get("mar_attack")
    mit = config.get("mitigation") or {}
    targets = {}
    for tspec in config.get("targets", [{"kind": "rar"}, {"kind": "var"}]):
        tspec = dict(tspec)
        label = tspec.pop("label", tspec["kind"])
        tcfg = IARTrainConfig.from_dict({"seed": seed, "tokenizer_steps": config.get("tokenizer_steps", 600), **tspec})
        # VAR and RAR share one tokenizer only when every setting that shapes it is the same
        tok_kind = "mar" if tcfg.kind == "mar" else "vq"
        tok_key = json.dumps([tok_kind, tcfg.tokenizer, tcfg.tokenizer_steps, tcfg.tokenizer_lr, tcfg.batch_size,
                              tcfg.grad_accum, tcfg.seed], sort_keys=True)
        if tok_key not in tokenizers:
            t0 = time.time()
            tokenizers[tok_key] = train_tokenizer(public.images, tcfg, progress=progress)
            seconds = results.setdefault("tokenizer_seconds", {})
            seconds[tok_kind if tok_kind not in seconds else f"{tok_kind}:{label}"] = round(time.time() - t0, 1)
        t0 = time.time()
        target = train_iar(split.members.images, torch.as_tensor(split.members.labels), tcfg, out / "targets" / label,
                           tokenizer=tokenizers[tok_key], split_manifest=split.to_manifest(), progress=progress)
        targets[label] = target
        entry: dict[str, Any] = {"train_seconds": round(time.time() - t0, 1), "describe": target.describe(),
                                 "epochs": tcfg.steps * tcfg.batch_size / len(split.members)}
        feats = compute_features(target, data, seed=seed, mar=mar_attack, progress=progress)
        if target.discrete:
            entry["group_auc"] = group_aucs(target, data)
        else:
            from genleak.iar.audit import mar_ablation

            entry["mar_ablation"] = mar_ablation(target, data, seed=seed)
        entry["mia"] = mia_report(feats)
        entry["di"] = di_report(feats, n_resamples=resamples, seed=seed)
        entry["extraction"] = {}
        for p in prefix_lens:
            r = extract_iar(target, split.members, split.nonmembers, IARExtractionConfig(prefix_len=p, seed=seed, **ext_cfg))
            entry["extraction"][str(r.prefix_len)] = {k: v for k, v in r.to_dict().items() if k not in ("train", "validation")}
        if label in mit.get("kinds", []):
            sigmas = mit.get("mar_sigmas" if target.kind == "mar" else "sigmas", [0.0])
            rows = noise_sweep(target, data, sigmas, judge=judge, n_per_class=int(mit.get("n_per_class", 20)),
                               extraction=IARExtractionConfig(seed=seed, **ext_cfg), di_resamples=resamples, seed=seed,
                               progress=progress)
            entry["mitigation"] = rows
            entry["mitigation_table"] = noise_table(rows)
        results["targets"][label] = entry
        atomic_write_json(out / "results.json", results)
    ddpm_cfg = config.get("ddpm")
    if ddpm_cfg:
        from genleak.train import TrainConfig, train_ddpm

        ddpm_cfg = dict(ddpm_cfg)
        attacks = tuple(ddpm_cfg.pop("attacks", DDPM_ATTACKS))
        tc = TrainConfig(seed=seed, **{**ddpm_cfg, "block_out_channels": tuple(ddpm_cfg.get("block_out_channels", (32, 64)))})
        t0 = time.time()
        ddpm = train_ddpm(split.members.images, tc, out / "targets" / "ddpm", split_manifest=split.to_manifest(),
                          progress=progress)
        rep = ddpm_report(ddpm, data, attacks, seed=seed, n_resamples=resamples)
        rep["train_seconds"] = round(time.time() - t0, 1)
        rep["epochs"] = tc.steps * tc.batch_size / len(split.members)
        rep["parameters"] = sum(p.numel() for p in ddpm.unet.parameters())
        results["ddpm"] = rep
    results["summary"] = summary_table(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "summary.md", results["summary"] + "\n")
    return results


def summary_table(results: dict[str, Any]) -> str:
    """Markdown: per target the calibrated best MIA (plain / CFG), the oracle max, DI min |P| per
    method, extraction counts; then the DDPM row; then each mitigation table."""

    def fmt(v: Any) -> str:
        return "none" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| model | epochs | params | best plain MIA (cal.) -> TPR@1%FPR / AUC | best CFG MIA (cal.) -> TPR@1%FPR / AUC "
             "| max TPR@1%FPR (any attack) | DI min |P| (cfg-sum / plain-sum / cfg-lr / baseline-lr) | extracted (FP) by prefix |",
             "|---|---|---|---|---|---|---|---|"]
    for label, e in results["targets"].items():
        mia = e["mia"]
        bp, bc = mia.get("best_plain"), mia.get("best_cfg")
        di = e["di"]
        ext = ", ".join(f"i={p}: {v['extracted']} ({v['false_positives']})" for p, v in e["extraction"].items())
        lines.append(
            f"| {label} | {e['epochs']:g} | {e['describe']['parameters']} | "
            f"{bp['attack']} -> {bp['tpr_at_1pct_fpr']:.3f} / {bp['auc']:.3f} | "
            + (f"{bc['attack']} -> {bc['tpr_at_1pct_fpr']:.3f} / {bc['auc']:.3f}" if bc else "-")
            + f" | {mia['max_tpr_at_1pct_fpr']:.3f} | "
            + " / ".join(fmt(di[k]["min_suspect_size"]) if k in di else "-" for k in ("cfg-sum", "plain-sum", "cfg-lr", "baseline-lr"))
            + f" | {ext} |")
    d = results.get("ddpm")
    if d:
        b = d["best"]
        lines.append(f"| pixel DDPM | {d['epochs']:g} | {d['parameters']} | {b['attack']} -> {b['tpr_at_1pct_fpr']:.3f} / "
                     f"{b['auc']:.3f} | - | {d['max_tpr_at_1pct_fpr']:.3f} | "
                     f"sum {fmt(d['di']['sum']['min_suspect_size'])} / lr {fmt(d['di']['lr']['min_suspect_size'])} | - |")
    for label, e in results["targets"].items():
        if "mitigation_table" in e:
            lines += ["", f"Output-noise mitigation, {label}:", "", e["mitigation_table"]]
    return "\n".join(lines)
