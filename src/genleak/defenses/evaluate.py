"""Compare a baseline with defended models: privacy (every attack) next to quality (every model).

``evaluate_defense`` runs the same attacks through ``genleak.pipeline.run_attacks`` on the
baseline and on each defended model (a diffusers folder or a DualMD folder), on the same split,
and measures each model's generation quality with the same feature extractor and the same held-out
real images (``genleak.quality``). The table always shows both: a defense that lowers the AUC and
ruins the samples shows both numbers, and so does one whose quality improves.

Reference data: real images of the split's source that are neither members nor non-members.
Half of them train the offline default encoder (unless ``encoder`` names one), the other half
are the held-out images FID and precision/recall compare against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genleak.data import ImageSet, MembershipSplit
from genleak.errors import GenleakError
from genleak.io import atomic_write_json, atomic_write_text
from genleak.targets.folders import TRAIN_RECORD

# White/gray-box attacks of table 3 and 10 (SecMI, PIA), the loss and SimA attacks, and the
# black-box generation-distance attack DualMD targets (table 5).
DEFAULT_DEFENSE_ATTACKS: tuple[str, ...] = ("loss", "secmi", "pia", "sima", "genbox")
EVAL_FILE = "defense_eval.json"
TABLE_FILE = "defense_eval.md"


def reference_images(split: MembershipSplit, max_images: int = 2000, seed: int = 0,
                     source: dict[str, Any] | None = None) -> ImageSet:
    """Images of ``source`` (default: the split's own) that are on neither side of the split."""
    from genleak.data import load_source

    spec = source or split.source
    if spec.get("kind") == "memory":
        raise GenleakError("the split was built from in-memory images; give reference images (--reference SOURCE)")
    images = load_source(spec)
    used = set(split.members.hashes) | set(split.nonmembers.hashes)
    rows = [i for i, h in enumerate(images.hashes) if h not in used]
    if len(rows) < 8:
        raise GenleakError(f"only {len(rows)} reference images outside the split; give more with --reference SOURCE")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(rows), generator=g)[:max_images].sort().values.tolist()
    return images[[rows[i] for i in pick]]


def _label(path: Path, used: set[str]) -> str:
    base = path.name or str(path)
    label, k = base, 2
    while label in used:
        label, k = f"{base}-{k}", k + 1
    used.add(label)
    return label


def evaluate_defense(
    baseline: str | Path,
    defended: Sequence[str | Path],
    split: MembershipSplit,
    out_dir: str | Path,
    *,
    attacks: Sequence[str] = DEFAULT_DEFENSE_ATTACKS,
    attack_params: dict[str, dict[str, Any]] | None = None,
    adaptive_rounds: Sequence[int] = (),
    encoder: str | Path | None = None,
    trust_torchscript: bool = False,
    reference: ImageSet | None = None,
    n_quality: int = 500,
    quality_steps: int = 50,
    tau: float | None = None,
    seed: int = 0,
    bootstrap: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    command: str = "",
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Attack and measure the baseline and each defended model; write ``defense_eval.json`` and ``.md``.

    ``adaptive_rounds`` adds the appendix A.5 attack (``dual-adaptive``) with those numbers of
    rounds, using genbox's parameters. ``trust_torchscript`` allows a TorchScript ``encoder`` file
    (code; see ``quality.load_extractor``). Returns the JSON-able result.
    """
    from genleak.pipeline import run_attacks, split_summary
    from genleak.quality import load_extractor, quality_report, train_encoder
    from genleak.targets.loading import load_target
    from genleak.targets.sampling import generate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split.validate()
    folders = [Path(baseline), *[Path(d) for d in defended]]
    if labels is not None and len(labels) != len(folders):
        raise GenleakError(f"{len(labels)} labels for {len(folders)} models")
    used: set[str] = set()
    names = list(labels) if labels is not None else [_label(p, used) for p in folders]
    targets = [load_target(p) for p in folders]
    halves = find_halves(split, folders)

    # reference images: half train the default encoder, half are the held-out set for quality
    if reference is None:
        reference = reference_images(split, seed=seed)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(reference), generator=g).tolist()
    enc_rows, held_rows = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])
    heldout = reference[held_rows]
    if encoder is None:
        enc_dir = out / "encoder"
        if (enc_dir / "encoder.json").is_file():
            extractor = load_extractor(enc_dir)
        else:
            enc_set = reference[enc_rows]
            extractor = train_encoder(enc_set.images, enc_set.labels, seed=seed, out_dir=enc_dir, progress=progress)
        encoder = enc_dir
    else:
        extractor = load_extractor(encoder, trust_code=trust_torchscript)

    params = {k: dict(v) for k, v in (attack_params or {}).items()}
    if Path(encoder).is_dir():  # genbox's feature space takes encoder folders only, never TorchScript
        params.setdefault("genbox", {}).setdefault("encoder", str(encoder))
    models: dict[str, Any] = {}
    for name, folder, target in zip(names, folders, targets, strict=True):
        start = time.perf_counter()
        result = run_attacks(target, split, list(attacks), out / name, attack_params=params, seed=seed,
                             batch_size=batch_size, bootstrap=bootstrap, progress=progress, command=command)
        rows = {a.name: a for a in result.attacks}
        for r in adaptive_rounds:
            adaptive = {**params.get("genbox", {}), **params.get("dual-adaptive", {}), "rounds": int(r)}
            res = run_attacks(target, split, ["dual-adaptive"], out / name / f"adaptive-r{r}",
                              attack_params={"dual-adaptive": adaptive}, seed=seed, batch_size=batch_size,
                              bootstrap=bootstrap, progress=progress, command=command)
            rows[f"dual-adaptive(r={r})"] = res.attacks[0]
        attack_rows = {}
        for key, a in rows.items():
            entry = a.to_dict()
            entry.pop("warnings", None)
            if a.ok and a.metrics is not None:
                m = a.metrics
                entry.update({k: getattr(m, k) for k in TABLE_KEYS})
                if halves is not None:
                    entry["per_half"] = _per_half(a, halves, seed)
                if a.member_scores.ndim > 1:  # genbox: the pixel- and feature-space scores too
                    from genleak.attacks import get_attack
                    from genleak.metrics import evaluate as _evaluate

                    cols = get_attack(a.name, **entry.get("config", {})).columns
                    entry["columns"] = {c: _evaluate(a.member_scores[:, j], a.nonmember_scores[:, j]).to_dict()
                                        for j, c in enumerate(cols)}
            attack_rows[key] = entry
            for col, m in entry.get("columns", {}).items():
                if col.endswith("-feature"):  # its own table row: the feature-space distance
                    attack_rows[f"{key}/feature"] = {"status": "ok", **{k: m[k] for k in TABLE_KEYS}}
        gen = generate(target, n_quality, quality_steps, seed, progress=progress)
        quality = quality_report(gen, heldout.images, split.members.images, extractor, tau=tau)
        models[name] = {
            "folder": str(folder),
            "role": "baseline" if folder == folders[0] else "defended",
            "target": target.describe(),
            "attacks": attack_rows,
            "quality": quality,
            "seconds": round(time.perf_counter() - start, 2),
        }
        models[name].update(_defense_record(folder))
    warnings = []
    from genleak.metrics import fpr_resolution_warning

    for alpha in (0.01, 0.001):
        w = fpr_resolution_warning(len(split.nonmembers), alpha)
        if w:
            warnings.append(w)
    result = {
        "format": "genleak.defense_eval",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "split": split_summary(split),
        "baseline": names[0],
        "models": models,
        "quality_setup": {"n_generated": n_quality, "steps": quality_steps, "heldout": len(heldout),
                          "extractor": extractor.describe(), "seed": seed},
        "warnings": warnings,
    }
    atomic_write_json(out / EVAL_FILE, result)
    atomic_write_text(out / TABLE_FILE, markdown_table(result))
    return result


def find_halves(split: MembershipSplit, folders: Sequence[Path]) -> tuple[list[int], list[int]] | None:
    """The DualMD halves of ``split``'s members, from the split itself or a disjoint folder's split.json.

    With halves known, every attack also reports D_1-members-vs-non-members and D_2-vs-non-members
    (how much one sub-model leaks *its own* training half, section 3.4's comparison)."""
    from genleak.defenses.disjoint import HALVES_KEY, halves_of
    from genleak.targets.folders import TARGET_SPLIT_FILE

    candidates = [split]
    for f in folders:
        for p in (f / TARGET_SPLIT_FILE, f.parent / TARGET_SPLIT_FILE):
            if p.is_file():
                try:
                    import json

                    meta = json.loads(p.read_text()).get("metadata") or {}
                except (OSError, ValueError):
                    continue
                if HALVES_KEY in meta:
                    candidates.append(type(split)(members=split.members, nonmembers=split.nonmembers,
                                                  source=split.source, metadata={HALVES_KEY: meta[HALVES_KEY]}))
    for c in candidates:
        if HALVES_KEY in c.metadata:
            try:
                return halves_of(c)
            except GenleakError:
                continue
    return None


def _per_half(a: Any, halves: tuple[list[int], list[int]], seed: int) -> dict[str, Any]:
    from genleak.metrics import evaluate

    ms, ns = a.member_scores, a.nonmember_scores
    if ms.ndim > 1:
        ms, ns = ms[:, 0], ns[:, 0]
    out = {}
    for i, rows in enumerate(halves, start=1):
        m = evaluate(ms[rows], ns, seed=seed)
        out[f"half_{i}"] = {"auc": m.auc, "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr, "n_members": len(rows)}
    return out


def _defense_record(folder: Path) -> dict[str, Any]:
    """What a defense folder says about itself (the DP budget spent, DualMD's alternation)."""
    import json

    extra: dict[str, Any] = {}
    if (folder / "dp.json").is_file():
        dp = json.loads((folder / "dp.json").read_text())
        extra["privacy"] = {k: dp.get(k) for k in ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "accountant")}
    if (folder / TRAIN_RECORD).is_file():
        rec = json.loads((folder / TRAIN_RECORD).read_text())
        extra["training"] = {"steps": rec.get("steps"), "defense": rec.get("config", {}).get("extra", {}).get("defense"),
                             "final_loss": rec.get("final_loss")}
    return extra


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# The figures a defense table shows per attack, judged two-sided (metrics module docstring): a
# defense that drives AUC far below 0.5 leaks the reversed signal, which an attacker flips.
TABLE_KEYS = ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "leakage_auc", "leak_direction",
              "flipped_tpr_at_1pct_fpr", "flipped_tpr_at_01pct_fpr")


def _leak_cell(row: dict[str, Any], sep: str, digits: int) -> str:
    """AUC, TPR@1% and TPR@0.1%FPR; when members score lower (AUC < 0.5), also what the sign-flipped
    attack reaches, so a reversed signal never reads as privacy."""
    cell = sep.join([f"{row['auc']:.3f}", f"{row['tpr_at_1pct_fpr']:.{digits}f}", f"{row['tpr_at_01pct_fpr']:.{digits}f}"])
    if row.get("leak_direction") == "flipped":
        cell += " (flipped: " + sep.join([f"{row['leakage_auc']:.3f}", f"{row['flipped_tpr_at_1pct_fpr']:.{digits}f}",
                                         f"{row['flipped_tpr_at_01pct_fpr']:.{digits}f}"]) + ")"
    return cell


def markdown_table(result: dict[str, Any]) -> str:
    """One table: rows = attacks (AUC / TPR@1%FPR / TPR@0.1%FPR) then quality; columns = models."""
    models = result["models"]
    names = list(models)
    attack_names: list[str] = []
    for m in models.values():
        for a in m["attacks"]:
            if a not in attack_names:
                attack_names.append(a)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    lines = []
    for a in attack_names:
        cells = []
        for n in names:
            row = models[n]["attacks"].get(a)
            if row is None or row.get("status") != "ok":
                cells.append("failed" if row else "—")
            else:
                cells.append(_leak_cell(row, " / ", 3))
        lines.append(f"| {a} AUC / TPR@1% / TPR@0.1% | " + " | ".join(cells) + " |")
    for key, label in (("fid", "FID ↓"), ("precision", "precision ↑"), ("recall", "recall ↑"),
                       ("memorization_rate", "memorisation rate ↓"), ("nn_ratio", "NN-distance ratio (<1: copies)")):
        lines.append(f"| {label} | " + " | ".join(_fmt(models[n]["quality"][key]) for n in names) + " |")
    eps = [_fmt((models[n].get("privacy") or {}).get("epsilon"), 2) for n in names]
    if any(e != "—" for e in eps):
        lines.append("| DP ε | " + " | ".join(eps) + " |")
    q = result["quality_setup"]
    note = (f"\nQuality: {q['n_generated']} generations ({q['steps']} DDIM steps) vs {q['heldout']} held-out real "
            f"images, features: {q['extractor'].get('name')}; memorisation τ = {_fmt(models[names[0]]['quality']['tau'])} "
            "(RMS pixel distance).\n")
    warn = "".join(f"\nNote: {w}\n" for w in result.get("warnings", []))
    return head + "\n".join(lines) + "\n" + note + warn


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    models = result["models"]
    names = list(models)
    table = Table(title=f"defense evaluation on {result['split']['name']} "
                        f"({result['split']['n_members']} members / {result['split']['n_nonmembers']} non-members)")
    table.add_column("attack / metric")
    for n in names:
        table.add_column(n, justify="right")
    attack_names: list[str] = []
    for m in models.values():
        attack_names += [a for a in m["attacks"] if a not in attack_names]
    for a in attack_names:
        cells = []
        for n in names:
            row = models[n]["attacks"].get(a)
            cells.append("—" if row is None else ("failed" if row.get("status") != "ok"
                                                  else _leak_cell(row, " | ", 2)))
        table.add_row(f"{a} (AUC | TPR@1% | @0.1%)", *cells)
    for key, label in (("fid", "FID ↓"), ("precision", "precision ↑"), ("recall", "recall ↑"),
                       ("memorization_rate", "memorisation ↓"), ("nn_ratio", "NN ratio (<1: copies)")):
        table.add_row(label, *[_fmt(models[n]["quality"][key]) for n in names])
    eps = [_fmt((models[n].get("privacy") or {}).get("epsilon"), 2) for n in names]
    if any(e != "—" for e in eps):
        table.add_row("DP ε", *eps)
    console = Console()
    console.print(table)
    for w in result.get("warnings", []):
        console.print(f"[yellow]note:[/yellow] {w}")
