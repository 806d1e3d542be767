"""One config, every defense: split -> baseline -> disjoint teachers / DualMD -> DistillMD -> KD ->
DP-SGD -> ``evaluate_defense``. ``genleak defend experiment --config configs/defense_*.json``.

Every model trains with the same ``train`` settings (same steps, batch size, lr, EMA: the fair
comparison of appendix A.2.2); each lives in its own subfolder of OUT and is reused when the
folder already holds the finished run, so an interrupted experiment resumes.

Config keys (JSON): ``name``; ``split`` {source, members, nonmembers, seed, stratify}; ``train``
{steps, block_out_channels, batch_size, lr, ema_decay, seed}; ``defenses`` {disjoint:
{halves_seed, dual_steps}, distillmd: {init}, kd: {init}, dpsgd: {noise_multiplier |
target_epsilon, delta, max_grad_norm, accountant; optional overrides steps, lr, batch_size}} (leave a defense
out to skip it); ``evaluate`` {attacks, attack_params, adaptive_rounds, n_quality,
quality_steps, tau, bootstrap, seed}.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genleak.config import read_config
from genleak.errors import GenleakError

_KNOWN = {"name", "description", "split", "train", "defenses", "evaluate", "notes"}


def load_config(path: str | Path) -> dict[str, Any]:
    cfg = read_config(path, known=_KNOWN, what="experiment config")
    for key in ("split", "train"):
        if key not in cfg:
            raise GenleakError(f"experiment config '{path}' has no '{key}' section")
    return cfg


def _check_keys(section: dict[str, Any], allowed: set[str], name: str) -> None:
    unknown = set(section) - allowed
    if unknown:
        raise GenleakError(f"experiment config section '{name}' has unknown keys {sorted(unknown)}; known: {sorted(allowed)}")


def run_experiment(config_path: str | Path, out_dir: str | Path, *, progress: bool = True,
                   command: str = "") -> dict[str, Any]:
    """Run the experiment of ``config_path`` into ``out_dir``; returns ``evaluate_defense``'s result."""
    from genleak.data import MembershipSplit, load_source, make_split, parse_source_spec
    from genleak.defenses.disjoint import train_disjoint
    from genleak.defenses.distill import train_distillmd
    from genleak.defenses.dpsgd import DPConfig, train_dpsgd
    from genleak.defenses.evaluate import evaluate_defense
    from genleak.defenses.kd import train_kd
    from genleak.io import atomic_write_json
    from genleak.train import TrainConfig, train_ddpm

    cfg = load_config(config_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "experiment_config.json", cfg)

    sc = cfg["split"]
    _check_keys(sc, {"source", "members", "nonmembers", "seed", "stratify"}, "split")
    split_path = out / "split.json"
    if split_path.is_file():
        split = MembershipSplit.load(split_path)
    else:
        spec = parse_source_spec(sc["source"])
        split = make_split(load_source(spec), int(sc["members"]), int(sc.get("nonmembers", sc["members"])),
                           seed=int(sc.get("seed", 0)), source=spec, stratify=bool(sc.get("stratify", False)),
                           name=cfg.get("name", "defense"))
        split.save(split_path)

    tc = dict(cfg["train"])
    _check_keys(tc, {f.name for f in dataclasses.fields(TrainConfig)}, "train")
    tc["block_out_channels"] = tuple(tc.get("block_out_channels", (32, 64)))
    train = TrainConfig(**tc)
    say = print if progress else (lambda *a, **k: None)

    say(f"baseline: {train.steps} steps on {len(split.members)} members")
    train_ddpm(split.members.images, train, out / "baseline", split_manifest=split.to_manifest(), progress=progress)
    defended: list[Path] = []
    labels = ["baseline"]
    d = cfg.get("defenses", {})
    if "disjoint" in d:
        dj = d["disjoint"]
        say("disjoint teachers (Algorithm 1)")
        train_disjoint(split, train, out / "dualmd", halves_seed=int(dj.get("halves_seed", 0)),
                       dual_steps=int(dj.get("dual_steps", 50)), progress=progress)
        # each sub-model alone, then DualMD: the comparison section 3.4 makes
        defended += [out / "dualmd" / "model_1", out / "dualmd" / "model_2", out / "dualmd"]
        labels += ["sub-model-1", "sub-model-2", "dualmd"]
    if "distillmd" in d:
        if "disjoint" not in d:
            raise GenleakError("distillmd needs the disjoint teachers: add a 'disjoint' section")
        say("DistillMD student (Algorithm 2)")
        train_distillmd(out / "dualmd", train, out / "distillmd", init=d["distillmd"].get("init", "scratch"),
                        progress=progress)
        defended.append(out / "distillmd")
        labels.append("distillmd")
    if "kd" in d:
        say("normal KD student (table 10)")
        train_kd(out / "baseline", split, train, out / "kd", init=d["kd"].get("init", "scratch"), progress=progress)
        defended.append(out / "kd")
        labels.append("kd")
    if "dpsgd" in d:
        dc = dict(d["dpsgd"])
        steps = int(dc.pop("steps", train.steps))
        lr = float(dc.pop("lr", train.lr))
        batch = int(dc.pop("batch_size", train.batch_size))
        _check_keys(dc, {f.name for f in dataclasses.fields(DPConfig)}, "defenses.dpsgd")
        dp = DPConfig(**dc)
        say(f"DP-SGD ({steps} steps)")
        _, report = train_dpsgd(split, dataclasses.replace(train, steps=steps, lr=lr, batch_size=batch), dp, out / "dpsgd",
                                progress=progress)
        say(f"DP-SGD spent epsilon = {report['epsilon']:.3f} at delta = {report['delta']:g}")
        defended.append(out / "dpsgd")
        labels.append("dpsgd")
    if not defended:
        raise GenleakError("the experiment config lists no defenses")

    ev = cfg.get("evaluate", {})
    return evaluate_defense(
        out / "baseline", defended, split, out,
        attacks=ev.get("attacks", ["loss", "secmi", "pia", "sima", "genbox"]),
        attack_params=ev.get("attack_params"),
        adaptive_rounds=ev.get("adaptive_rounds", []),
        n_quality=int(ev.get("n_quality", 500)),
        quality_steps=int(ev.get("quality_steps", 50)),
        tau=ev.get("tau"),
        seed=int(ev.get("seed", 0)),
        bootstrap=int(ev.get("bootstrap", 0)),
        progress=progress,
        command=command,
        labels=labels,
    )
