"""Latent diffusion benchmarks: attack cost on a tiny SD-style target, and the issue-5 claims.

    # per-attack samples/s, denoiser NFE, UNet evaluations and VAE calls on a tiny SD-style target
    python benchmarks/latent.py speed [--n 128] [--batch 64] [--threads 1]

    # the experiments behind the claims (pixel vs LDM, KL weight, adversarial VAE, text-to-image,
    # prompt diversification, LoRA); each config lists its runs; results are resumable/cached
    python benchmarks/latent.py claims --config configs/ldm_pixel_vs_latent.json --out runs/ldm-pixel
    python benchmarks/latent.py claims --config configs/ldm_kl_sweep.json --out runs/ldm-kl
    python benchmarks/latent.py claims --config configs/ldm_text.json --out runs/ldm-text

    # AUC [95% bootstrap CI], TPR@1%FPR / @0.1%FPR, two-sided leakage of every run's saved scores
    python benchmarks/latent.py metrics --out runs/ldm-text

Record results in benchmarks/results_latent.md together with the command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


# -- claims -----------------------------------------------------------------------------------------
def make_split(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The evaluation split (members vs non-members) and a disjoint public pool (VAE data, base model)."""
    from genleak.data import load_source
    from genleak.data import make_split as _make_split

    source = cfg.get("source", {"kind": "digits", "size": 8})
    images = load_source(source)
    m, n, pool = cfg.get("members", 64), cfg.get("nonmembers", 64), cfg.get("pool", 512)
    big = _make_split(images, m, n + pool, seed=cfg.get("seed", 0), source=source)
    split = type(big)(members=big.members, nonmembers=big.nonmembers[:n], source=big.source, seed=big.seed,
                      name=cfg.get("name", "ldm-bench"))
    return split, big.nonmembers[n:]


def _key(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def _aucs(target: Any, split: Any, attacks: list[str], out: Path, params: dict[str, Any]) -> dict[str, float]:
    from genleak.io import atomic_save_npz
    from genleak.metrics import evaluate
    from genleak.pipeline import run_attacks

    local = [a for a in attacks if a.startswith("blackbox")]
    result = run_attacks(target, split, [a for a in attacks if a not in local], out, attack_params=params, progress=False)
    row = {a.name: (round(float(a.metrics.auc), 4) if a.metrics is not None else f"failed: {a.error}") for a in result.attacks}
    for name in local:
        strength = float(name.split("@")[1]) if "@" in name else 1.0
        members, nonmembers = blackbox_scores(target, split, strength)
        atomic_save_npz(out / "scores" / f"{name}.npz", member_scores=members, nonmember_scores=nonmembers)  # for `metrics`
        row[name] = round(float(evaluate(members, nonmembers).auc), 4)
    return row


def blackbox_scores(target: Any, split: Any, strength: float = 1.0, n_gen: int = 3, steps: int = 50,
                    seed: int = 0) -> tuple[Any, Any]:
    """Member and non-member scores of ``genbox`` at ``strength`` (3 generations, 50 DDIM steps: DualMD
    paper appendix A.2.2): from the caption alone at strength 1 (the Pang & Wang setting of 001 table 5),
    image-to-image from the noised query below 1. Lets one config compare several strengths."""
    from genleak.attacks import get_attack

    attack = get_attack("genbox", strength=strength, n_gen=n_gen, steps=steps)

    def scores(side: Any) -> Any:
        cond = target.conditions(side) if getattr(target, "conditions", None) else None
        return attack.score(target, side.images, side.ids, cond=cond, seed=seed, progress=False).numpy()

    return scores(split.members), scores(split.nonmembers)


def run_claims(config_path: Path, out: Path) -> list[dict[str, Any]]:
    from genleak.targets.latent import caption_sets, caption_vocabulary, template_captions
    from genleak.train import TrainConfig, train_ddpm
    from genleak.train.latent import LatentTrainConfig, build_text_stack, train_latent
    from genleak.train.vae import VAEConfig, train_vae

    cfg = json.loads(config_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    split, pool = make_split(cfg["split"])
    attacks = cfg.get("attacks", ["loss", "pia", "sima"])
    params = cfg.get("attack_params", {})
    rows: list[dict[str, Any]] = []
    pixels = cfg.get("pixel", [])
    for pc in [pixels] if isinstance(pixels, dict) else pixels:
        pc = dict(pc)
        name = pc.pop("name", "pixel-ddpm")
        pc["block_out_channels"] = tuple(pc.get("block_out_channels", (32, 64)))
        start = time.time()
        folder = "pixel" if name == "pixel-ddpm" else name
        target = train_ddpm(split.members.images, TrainConfig(**pc), out / folder, progress=False)
        rows.append({"run": name, "steps": pc.get("steps"), "train_s": round(time.time() - start, 1),
                     **_aucs(target, split, cfg.get("pixel_attacks", attacks), out / f"{folder}-scores", params)})
        print(rows[-1], flush=True)

    text_stack = None
    if any(r.get("text") for r in cfg["runs"]):
        template = cfg.get("caption_template", "a {thickness} handwritten digit {name} {slant}")
        for side in (split.members, split.nonmembers, pool):
            side.captions = template_captions(side, template)
        corpus = [c for side in (split.members, split.nonmembers, pool) for c in side.captions] + caption_vocabulary()
        text_stack = build_text_stack(corpus, **cfg.get("text_encoder", {}))
    bases: dict[str, Any] = {}
    for run in cfg["runs"]:
        vc = {**cfg["vae"], **run.get("vae", {})}
        extra = int(vc.pop("extra", 0))
        vc["block_out_channels"] = tuple(vc.get("block_out_channels", (16, 32)))
        vae_dir = out / f"vae-{_key({**vc, 'extra': extra})}"
        start = time.time()
        vae_images = torch.cat([split.members.images, pool.images[:extra]])
        vae = train_vae(vae_images, VAEConfig(**vc), vae_dir, heldout=split.nonmembers.images, progress=False)
        vae_s = time.time() - start
        vae_rec = json.loads((vae_dir / "genleak_vae.json").read_text())
        lc = {**cfg["ldm"], **run.get("ldm", {})}
        lc["block_out_channels"] = tuple(lc.get("block_out_channels", (32, 64)))
        text = bool(run.get("text"))
        init = captions = None
        te = tok = None
        if text:
            te, tok = text_stack
            lc["text"] = True
            if run.get("base"):
                bc = {**cfg["ldm"], **cfg["base"], "text": True}
                bc["block_out_channels"] = tuple(bc.get("block_out_channels", (32, 64)))
                bkey = _key({"vae": vae_dir.name, **bc})
                if bkey not in bases:
                    bases[bkey] = train_latent(pool.images, vae, LatentTrainConfig(**bc), out / f"base-{bkey}",
                                               captions=caption_sets(pool, 0), text_encoder=te, tokenizer=tok,
                                               caption_template=cfg.get("caption_template"), progress=False)
                init = bases[bkey]
            captions = caption_sets(split.members, int(run.get("prompt_variants", 0)))
        start = time.time()
        defense = run.get("defense")
        if defense is None:
            target = train_latent(split.members.images, vae, LatentTrainConfig(**lc), out / f"ldm-{run['name']}",
                                  captions=captions, text_encoder=te, tokenizer=tok, init=init,
                                  caption_template=cfg.get("caption_template"), progress=False)
        else:
            variants = int(run.get("prompt_variants", 0))
            teachers_key = _key({"vae": vae_dir.name, **lc, **({"prompt_variants": variants} if variants else {})})
            target = _defended(defense, split, vae, LatentTrainConfig(**lc), out / f"dual-{teachers_key}",
                               out / f"ldm-{run['name']}", captions, te, tok, cfg.get("caption_template"))
        row = {"run": run["name"], "steps": lc["steps"], "kl_weight": vc.get("kl_weight"), "adversarial": vc.get("adversarial", False),
               "recon_mse_members": round(vae_rec["recon_mse_train"], 5),
               "recon_mse_nonmembers": round(vae_rec["recon_mse_heldout"], 5),
               "posterior_noise_to_signal": round(vae_rec["noise_to_signal"], 3),
               "vae_s": round(vae_s, 1), "train_s": round(time.time() - start, 1),
               **_aucs(target, split, run.get("attacks", attacks), out / f"scores-{run['name']}", params)}
        rows.append(row)
        print(row, flush=True)
    (out / f"claims-{config_path.stem}.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return rows


def _defended(defense: str, split: Any, vae: Any, config: Any, teachers_dir: Path, student_dir: Path,
              captions: Any, text_encoder: Any, tokenizer: Any, template: str | None) -> Any:
    """DualMD (two teachers on disjoint halves, alternated when sampling) or DistillMD (a student
    taught by them), trained with the baseline's LatentTrainConfig (DualMD paper appendix A.2.2)."""
    from genleak.defenses.disjoint import train_disjoint_latent
    from genleak.defenses.distill import train_distillmd_latent

    if defense not in ("dualmd", "distillmd"):
        raise ValueError(f"unknown defense {defense!r}: dualmd or distillmd")
    dual = train_disjoint_latent(split, vae, config, teachers_dir, captions=captions, text_encoder=text_encoder,
                                 tokenizer=tokenizer, caption_template=template, progress=False)
    if defense == "dualmd":
        return dual
    from genleak.data import MembershipSplit

    halves = MembershipSplit.load(teachers_dir / "split.json")
    return train_distillmd_latent(*dual.models, halves, config, student_dir, captions=captions, progress=False)


def markdown(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


# -- speed ------------------------------------------------------------------------------------------
def tiny_sd_target(seed: int = 0) -> Any:
    """A random tiny SD-style text-to-image target (8x8 digits, 4x4x4 latents) built locally."""
    from genleak.targets.latent import LatentDiffusionTarget, build_latent_unet, build_vae, sd_scheduler
    from genleak.train.latent import build_text_stack

    torch.manual_seed(seed)
    te, tok = build_text_stack(["a handwritten digit seven", "a thin handwritten digit one upright"])
    vae = build_vae(8, 1, (16, 32), 4)
    unet = build_latent_unet(4, 4, (32, 64), 1, cross_attention_dim=32)
    return LatentDiffusionTarget(vae, unet, sd_scheduler(), te, tok, device="cpu")


def run_speed(n: int, batch: int, attacks: list[str], guidance: float) -> str:
    from genleak.attacks import get_attack
    from genleak.data import load_source
    from genleak.targets.latent import template_captions

    target = tiny_sd_target().with_guidance(guidance)
    data = load_source({"kind": "digits", "size": 8})[:n]
    cond = template_captions(data, "a {thickness} handwritten digit {name} {slant}")
    lines = ["| attack | NFE (denoiser queries) | UNet evals / sample | VAE encodes / sample | VAE decodes / sample "
             "| samples/s (wall) | samples / CPU-s |", "|---|---|---|---|---|---|---|"]
    for name in attacks:
        attack = get_attack(name)
        try:
            attack.score(target, data.images[:batch], data.ids[:batch], cond=cond[:batch], batch_size=batch, progress=False)
        except Exception as err:  # report and go on: one broken attack must not hide the others
            lines.append(f"| {name} | {attack.nfe} | failed: {type(err).__name__}: {str(err)[:80]} | | | | |")
            print(lines[-1], flush=True)
            continue
        for key in target.counters:
            target.counters[key] = 0
        start, cpu = time.perf_counter(), time.process_time()
        attack.score(target, data.images, data.ids, cond=cond, batch_size=batch, progress=False)
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        c = {k: v / n for k, v in target.counters.items()}
        lines.append(f"| {name} | {attack.nfe} | {c['unet']:.0f} | {c['vae_encode']:.0f} | {c['vae_decode']:.0f} "
                     f"| {n / seconds:.1f} | {n / cpu_s:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def print_metrics(out: Path, bootstrap: int = 1000) -> None:
    """Metrics of each run's saved per-sample scores (``scores-<run>/scores/<attack>.npz``), all of
    them evaluation (the claims table keeps AUCs only); ``score_metrics`` reads multi-column scores."""
    import numpy as np

    from genleak.pipeline import score_metrics

    paths = sorted(out.glob("scores-*/scores/*.npz"))
    if not paths:
        raise SystemExit(f"no saved scores under {out}/scores-*/scores/: run `latent.py claims --out {out}` first")
    print("| run | attack | AUC [95% CI] | TPR@1%FPR | TPR@0.1%FPR | two-sided |\n|---|---|---|---|---|---|")
    for path in paths:
        with np.load(path) as z:
            m, n = z["member_scores"], z["nonmember_scores"]
        r, _ = score_metrics(m, n, (slice(None), slice(None)), (slice(0), slice(0)), bootstrap=bootstrap, seed=0)
        print(f"| {path.parent.parent.name.removeprefix('scores-')} | {path.stem} | {r.auc:.3f} [{r.auc_ci[0]:.3f}, "
              f"{r.auc_ci[1]:.3f}] | {100 * r.tpr_at_1pct_fpr:.1f}% | {100 * r.tpr_at_01pct_fpr:.1f}% | "
              f"{r.leakage_auc:.3f} ({r.leak_direction}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("claims")
    c.add_argument("--config", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--threads", type=int, default=1)
    m = sub.add_parser("metrics")
    m.add_argument("--out", type=Path, required=True)
    m.set_defaults(threads=1)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=128)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--attacks", default="loss,sima,pia,pian,secmi,clid,dp-baseline,dp-partial-denoising,"
                   "dp-reversed-noising,dp-reversed-denoising,dp-full-denoising-100,gen-prompt,genbox")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cmd == "claims":
        run_claims(args.config, args.out)
        import sys

        from evidence import record_run  # benchmarks/evidence.py: mark the evidence entries this run produced

        record_run(sys.argv, args.out)
    elif args.cmd == "metrics":
        print_metrics(args.out)
    else:
        print(run_speed(args.n, args.batch, [a for a in args.attacks.split(",") if a], args.guidance))


if __name__ == "__main__":
    main()
