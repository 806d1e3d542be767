"""Thesis ch. 7, measured: what MIA numbers measure when the evaluation is not i.i.d. (issue 16 §1).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/realistic.py --out /tmp/realistic [--threads 1] [--quick]

Built-in digits 8x8 only (no downloads), seeds fixed. One permutation (seed 0) of the 1,797 digits
gives B (200, the fine-tuning set), A (700, the pre-training set) and N (897 held out, non-members).
Model P: a UNet (32, 64) DDPM trained on A; model F: P fine-tuned on B (sizes in ``SCALE``). Attacks
loss, secmi, pia, pian, sima through ``genleak.scoring.score_images``.

1. Distribution shift (pitfall 2): on P, members A vs non-members N as they are (i.i.d.) and after a
   preprocessing the members never had (JPEG re-encode; a resize round trip with other filters):
   the attacks' AUC / TPR@1%FPR, the model-free blind classifier's AUC (``guards.blind_classifier``)
   and the verdict (``report.verdict.compute_verdict``) of a result holding both.
2. Fine-tuned vs pre-trained members (pitfall 1): on F, B-members and A-members vs the same N.
3. Repeated subsets (thesis B.5): after dropping non-members that duplicate a member (exact or near,
   ``guards.find_duplicates``), mean +- std of TPR@1%FPR and AUC over 100 random m + m subsets
   (``metrics.repeated_subsets``), m = 500 where both sides allow it, else the largest the smaller side
   allows minus a quarter (so that subsets differ).

Writes OUT/realistic.json and prints a Markdown table (the form of Table 7.7.1).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genleak.data import ImageSet, load_source  # noqa: E402
from genleak.io import atomic_write_json  # noqa: E402
from genleak.metrics import evaluate, repeated_subsets  # noqa: E402

ATTACKS = ("loss", "secmi", "pia", "pian", "sima")
SIZES = {"B": 200, "A": 700}  # the rest (897) is N
SCALE = {"full": {"pretrain_steps": 1500, "finetune_steps": 1000},
         "quick": {"pretrain_steps": 200, "finetune_steps": 100}}
UNET = (32, 64)
SHIFTS = {"jpeg q=50": ("jpeg", 50), "resize 8->5->8 bilinear/nearest": ("resize", 5)}
N_SUBSETS, SUBSET = 100, 500


# ----------------------------------------------------------------------------------------------
# Scenario builders (tested in tests/test_realistic.py on tiny inputs)
# ----------------------------------------------------------------------------------------------


def _to_pil(img: torch.Tensor) -> Any:
    from PIL import Image

    a = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)


def _from_pil(pil: Any, channels: int) -> torch.Tensor:
    a = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).float()
    a = a[..., None] if a.ndim == 2 else a
    return (a.permute(2, 0, 1)[:channels] / 127.5 - 1.0)


def shift_images(images: torch.Tensor, kind: str, param: int) -> torch.Tensor:
    """Preprocess decoded images (N, C, H, W) in [-1, 1] as another pipeline would: ``jpeg`` re-encodes
    at quality ``param`` (PIL); ``resize`` shrinks to ``param`` pixels with a bilinear filter and
    enlarges back with nearest neighbour. Shape and range are kept."""
    from PIL import Image

    out = []
    for img in images:
        pil = _to_pil(img)
        if kind == "jpeg":
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=int(param))
            pil = Image.open(io.BytesIO(buf.getvalue()))
        elif kind == "resize":
            pil = pil.resize((param, param), Image.BILINEAR).resize(pil.size, Image.NEAREST)
        else:
            raise ValueError(f"unknown shift {kind!r}")
        out.append(_from_pil(pil, images.shape[1]))
    return torch.stack(out)


def drop_cross_duplicates(members: ImageSet, nonmembers: ImageSet) -> tuple[ImageSet, int, int]:
    """The non-members without an exact or near duplicate among the members (thesis 7.5.3 removes
    the non-member side too), with the number of exact and near duplicates dropped."""
    from genleak.inference.guards import find_duplicates

    rep = find_duplicates(members.images, list(members.hashes), list(members.ids),
                          nonmembers.images, list(nonmembers.hashes), list(nonmembers.ids))
    # find_duplicates pairs each member with its nearest non-member; run it the other way round too,
    # so every non-member close to some member is caught.
    back = find_duplicates(nonmembers.images, list(nonmembers.hashes), list(nonmembers.ids),
                           members.images, list(members.hashes), list(members.ids))
    exact = {u for _, u in rep.exact} | {u for u, _ in back.exact}
    near = ({u for _, u, _ in rep.near} | {u for u, _, _ in back.near}) - exact
    keep = [i for i, k in enumerate(nonmembers.ids) if k not in exact | near]
    return nonmembers[keep], len(exact), len(near)


def subset_size(n_members: int, n_nonmembers: int, wanted: int = SUBSET) -> int:
    """``wanted`` when both sides hold it; else 3/4 of the smaller side (subsets must differ)."""
    smaller = min(n_members, n_nonmembers)
    return wanted if smaller >= wanted else max(2, (3 * smaller) // 4)


def subset_stats(ms: np.ndarray, ns: np.ndarray, n_subsets: int = N_SUBSETS, seed: int = 0) -> dict[str, Any]:
    """Mean and std of TPR@1%FPR and AUC over ``n_subsets`` m + m subsets (m from ``subset_size``)."""
    m = subset_size(len(ms), len(ns))
    r = repeated_subsets(ms, ns, n_subsets=n_subsets, subset_size=m, seed=seed)
    return {"subset": m, "n_subsets": n_subsets, "tpr1": list(r["tpr@1%fpr"]), "auc": list(r["auc"])}


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _pools() -> dict[str, ImageSet]:
    digits = load_source({"kind": "digits", "size": 8})
    perm = np.random.default_rng(0).permutation(len(digits.ids)).tolist()
    b, a = SIZES["B"], SIZES["A"]
    return {"B": digits[perm[:b]], "A": digits[perm[b:b + a]], "N": digits[perm[b + a:]]}


def _score(target: Any, images: ImageSet) -> dict[str, np.ndarray]:
    from genleak.attacks import get_attack
    from genleak.scoring import score_images

    attacks = [get_attack(a) for a in ATTACKS]
    got = score_images(target, images, attacks, progress=False, batch_size=128)
    return {a.name: np.asarray(got[a].values, np.float64) for a in attacks}


def _row(ms: dict[str, np.ndarray], ns: dict[str, np.ndarray], bootstrap: int) -> dict[str, Any]:
    return {a: evaluate(ms[a], ns[a], bootstrap=bootstrap, seed=0).to_dict() for a in ATTACKS}


def _verdict(metrics: dict[str, Any], blind: Any, n_m: int, n_n: int) -> dict[str, Any]:
    from genleak.report.verdict import compute_verdict
    from genleak.results import AuditResult

    results = {"format": "genleak.results", "version": 1, "seed": 0, "target": {},
               "split": {"name": "realistic", "fingerprint": "-", "n_members": n_m, "n_nonmembers": n_n},
               "attacks": {a: {"status": "ok", "metrics": m} for a, m in metrics.items()},
               "sections": {"guards": {"kind": "guards", "status": "ok",
                                       "warnings": [blind.message()] if blind.shift_detected else [],
                                       "metrics": {"blind_classifier_auc": blind.auc,
                                                   "blind_classifier_p_value": blind.p_value}}}}
    v = compute_verdict(AuditResult.from_json(results))
    return {k: v.get(k) for k in ("level", "label", "confidence", "attack", "level_before_shift", "headline")}


def run(out: Path, scale: str, bootstrap: int) -> dict[str, Any]:
    from genleak.inference.guards import blind_classifier
    from genleak.train import TrainConfig, train_ddpm

    t0 = time.time()
    pools = _pools()
    steps = SCALE[scale]
    cfg = dict(block_out_channels=UNET, ema_decay=0.995, seed=0, checkpoint_every=10**9)
    pre = train_ddpm(pools["A"].images, TrainConfig(steps=steps["pretrain_steps"], **cfg), None, progress=False)
    t_pre = time.time() - t0
    fine = train_ddpm(pools["B"].images, TrainConfig(steps=steps["finetune_steps"], **cfg), None, progress=False,
                      unet=copy.deepcopy(pre.unet).train().requires_grad_(True))
    t_train = time.time() - t0
    print(f"trained in {t_train:.0f} s (pre-train {t_pre:.0f} s)", flush=True)

    doc: dict[str, Any] = {"scale": {"unet": list(UNET), **steps, "ema_decay": 0.995, "batch_size": 32, "lr": 1e-3,
                                     **{f"n_{k}": len(v.ids) for k, v in pools.items()}},
                           "bootstrap": bootstrap, "shift": {}, "finetune": {}, "subsets": {}}
    # 1. distribution shift on P
    s_a, s_n = _score(pre, pools["A"]), _score(pre, pools["N"])
    sets = {"i.i.d.": (pools["N"], s_n)}
    for name, (kind, p) in SHIFTS.items():
        shifted = ImageSet(shift_images(pools["N"].images, kind, p), pools["N"].ids)  # same ids: same noise
        sets[name] = (shifted, _score(pre, shifted))
    for name, (nset, s) in sets.items():
        blind = blind_classifier(pools["A"].images, nset.images)
        metrics = _row(s_a, s, bootstrap)
        doc["shift"][name] = {"blind_auc": blind.auc, "blind_p": blind.p_value, "attacks": metrics,
                              "verdict": _verdict(metrics, blind, len(s_a["loss"]), len(s["loss"]))}
        print(name, {a: round(m["auc"], 3) for a, m in metrics.items()}, "blind", round(blind.auc, 3), flush=True)
    # 2. fine-tuned vs pre-trained members on F
    f = {k: _score(fine, pools[k]) for k in ("B", "A", "N")}
    for k in ("B", "A"):
        blind = blind_classifier(pools[k].images, pools["N"].images)
        doc["finetune"][k] = {"blind_auc": blind.auc, "blind_p": blind.p_value, "attacks": _row(f[k], f["N"], bootstrap)}
    # 3. repeated subsets after cross-side duplicate removal
    rows = {"P: A vs N (i.i.d.)": (pools["A"], pools["N"], s_a, s_n),
            "P: A vs N, jpeg q=50": (pools["A"], sets["jpeg q=50"][0], s_a, sets["jpeg q=50"][1]),
            "F: B (fine-tuned) vs N": (pools["B"], pools["N"], f["B"], f["N"]),
            "F: A (pre-trained) vs N": (pools["A"], pools["N"], f["A"], f["N"])}
    for name, (mset, nset, sm, sn) in rows.items():
        kept, exact, near = drop_cross_duplicates(mset, nset)
        pos = {k: i for i, k in enumerate(nset.ids)}
        keep = [pos[k] for k in kept.ids]
        doc["subsets"][name] = {"dropped_exact": exact, "dropped_near": near, "n_members": len(mset.ids),
                                "n_nonmembers": len(keep),
                                "attacks": {a: subset_stats(sm[a], sn[a][keep]) for a in ATTACKS}}
    doc["seconds"] = {"train": round(t_train), "total": round(time.time() - t0)}
    atomic_write_json(out / "realistic.json", doc)
    return doc


def table(doc: dict[str, Any]) -> str:
    """Table 7.7.1's form: TPR@1%FPR (%) mean +- std over the subsets, plus AUC, per attack and setting."""
    names = list(doc["subsets"])
    head = "| attack | " + " | ".join(f"{n} TPR@1% | AUC" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    for a in ATTACKS:
        cells = []
        for n in names:
            s = doc["subsets"][n]["attacks"][a]
            cells.append(f"{100 * s['tpr1'][0]:.2f}±{100 * s['tpr1'][1]:.2f} | {s['auc'][0]:.3f}±{s['auc'][1]:.3f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    sizes = ", ".join(f"{n}: {doc['subsets'][n]['attacks']['loss']['subset']}+{doc['subsets'][n]['attacks']['loss']['subset']}"
                      f" (dropped {doc['subsets'][n]['dropped_exact']} exact, {doc['subsets'][n]['dropped_near']} near)"
                      for n in names)
    shift = ["", "| split (P) | blind AUC (p) | " + " | ".join(f"{a} AUC / TPR@1%" for a in ATTACKS) + " | verdict |",
             "|---|---|" + "---|" * len(ATTACKS) + "---|"]
    for n, s in doc["shift"].items():
        v = s["verdict"]
        before = f" (attacks alone: {v['level_before_shift']})" if v.get("level_before_shift") else ""
        shift.append(f"| {n} | {s['blind_auc']:.3f} ({s['blind_p']:.2g}) | "
                     + " | ".join(f"{m['auc']:.3f} / {100 * m['tpr_at_1pct_fpr']:.1f}%" for m in s["attacks"].values())
                     + f" | {v['label']}{before} |")
    ft = ["", "| members on F vs N | blind AUC | " + " | ".join(f"{a} AUC / TPR@1%" for a in ATTACKS) + " |",
          "|---|---|" + "---|" * len(ATTACKS)]
    for k, s in doc["finetune"].items():
        ft.append(f"| {k} | {s['blind_auc']:.3f} | "
                  + " | ".join(f"{m['auc']:.3f} / {100 * m['tpr_at_1pct_fpr']:.1f}%" for m in s["attacks"].values()) + " |")
    return "\n".join(lines + [f"\nsubsets: {sizes}"] + shift + ft)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="the 'quick' scale (a smoke run, minutes)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the CIs the verdict judges on")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    doc = run(args.out, "quick" if args.quick else "full", args.bootstrap)
    print(json.dumps(doc["seconds"]))
    print(table(doc))


if __name__ == "__main__":
    main()
