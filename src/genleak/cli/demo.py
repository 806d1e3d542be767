"""The demo audit: the built-in digits, a tiny DDPM that overfits, then ``genleak audit``'s own code on it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_demo(
    out: str | Path,
    *,
    steps: int = 2000,
    members: int = 64,
    nonmembers: int = 512,
    size: int = 16,
    seed: int = 0,
    command: str = "",
) -> dict:
    """Split -> train -> ``run_audit`` (what ``genleak audit`` runs) -> results.json, roc.png and
    report.html in ``out``; resumable (reruns reuse the split, the checkpoint and cached scores)."""
    import torch

    from genleak.audit import applicable_attacks, run_audit
    from genleak.cli.args import load_checked_split
    from genleak.cli.report import print_audit
    from genleak.data import MembershipSplit, load_source, make_split
    from genleak.train import TrainConfig, train_ddpm

    console = Console(width=max(Console().width, 120))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_path = out / "split.json"
    if split_path.is_file():
        split = MembershipSplit.load(split_path)
    else:
        spec = {"kind": "digits", "size": size}
        split = make_split(load_source(spec), members, nonmembers, seed=seed, source=spec)
        split.name = f"digits{size}-demo"
        split.save(split_path)
    console.print(f"[bold]1/3[/bold] split: {len(split.members)} members, {len(split.nonmembers)} non-members -> {split_path}")
    console.print(f"[bold]2/3[/bold] training a tiny DDPM for {steps} steps on the members (resumable) ...")
    torch.manual_seed(seed)
    # (32, 64) channels, EMA 0.995: overfits 64 16x16 digits in 2000 steps; EMA also steadies SecMI (README).
    config = TrainConfig(steps=steps, block_out_channels=(32, 64), ema_decay=0.995, seed=seed, checkpoint_every=500)
    target = train_ddpm(split.members.images, config, out / "target", split_manifest=split.to_manifest())
    console.print(f"[bold]3/3[/bold] audit (as `genleak audit`): {', '.join(applicable_attacks(target, None))}, "
                  "then the default sections")
    # A quarter of each side calibrates the ASR threshold; metrics use the other three quarters.
    split, check = load_checked_split(out / "target", split_path, allow_mismatch=False)
    result = run_audit(target, split, out, seed=seed, bootstrap=1000, command=command, calibration_fraction=0.25,
                     target_path=out / "target", split_path=split_path, split_check=check)
    print_audit(result, out)
    return result
