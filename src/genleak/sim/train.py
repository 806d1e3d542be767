"""Training loop of the simulators: DC-GAN, MS-GAN, SDI-GAN and ExpertSim in one resumable loop.

The project has no shared trainer for GANs yet, so this is a small loop of its own. A run folder
holds ``model.safetensors`` (weights, optimiser moments, RNG states) and ``state.json`` (config,
step, data normalisation); both are written atomically, and a run started again with the same config
continues from its last checkpoint and ends bitwise where an uninterrupted run would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from genleak.config import JsonConfig
from genleak.errors import GenleakError
from genleak.io import atomic_write_bytes, atomic_write_json
from genleak.sim.data import SimData, peak_coordinates
from genleak.sim.models import SimModel, diversity_loss, f_div, gumbel_gates
from genleak.train.runs import check_loss

MODELS = ("dcgan", "msgan", "sdigan", "expertsim")
WEIGHTS_FILE, STATE_FILE = "model.safetensors", "state.json"


@dataclass
class SimTrainConfig(JsonConfig):
    """Defaults: ch. 5 / [CODE] where they exist (lambda_div 0.1, lambda_in = lambda_aux = 1e-3,
    lambda_util 0.01, lambda_diff 1e-4, noise 10, lr_aux 1e-4); learning rates and batch sized for
    minutes on a CPU instead of the reference code's 150 epochs (lr_G 1e-4, lr_D 1e-5, batch 512)."""

    model: str = "sdigan"
    steps: int = 1000
    batch_size: int = 64
    noise_dim: int = 10
    width: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_aux: float = 1e-4
    lr_router: float = 1e-3
    lambda_div: float = 0.1
    lambda_in: float | None = None  # None: 1e-3 for expertsim, 0 otherwise
    lambda_aux: float | None = None  # None: 1e-3 for expertsim, 0 otherwise
    lambda_util: float = 0.01
    lambda_diff: float = 1e-4
    experts: int = 1  # only expertsim uses more than one
    tau: float = 1.0  # Gumbel-softmax temperature
    seed: int = 0
    checkpoint_every: int = 250

    def check(self) -> SimTrainConfig:
        if self.model not in MODELS:
            raise GenleakError(f"unknown sim model '{self.model}' (choose from {', '.join(MODELS)})")
        if self.steps < 1 or self.batch_size < 2 or self.experts < 1 or self.checkpoint_every < 1:
            raise GenleakError("need steps >= 1, batch size >= 2, experts >= 1, checkpoint_every >= 1")
        if self.experts > 1 and self.model != "expertsim":
            raise GenleakError(f"--experts {self.experts} needs --model expertsim")
        return self

    def lambdas(self) -> tuple[float, float, float]:
        """(div, in, aux) in effect: DC-GAN has no diversity term; IR and AR default on for ExpertSim."""
        default = 1e-3 if self.model == "expertsim" else 0.0
        div = 0.0 if self.model == "dcgan" else self.lambda_div
        return (div, default if self.lambda_in is None else self.lambda_in,
                default if self.lambda_aux is None else self.lambda_aux)


@dataclass
class Scaling:
    """Training-scale transforms: standardised conditions; points / scale, images log(x + 1) (ch. 5)."""

    cond_mean: list[float]
    cond_std: list[float]
    x_scale: float
    image: bool
    y_max: float  # largest training value in training scale: generations are clipped to it

    @classmethod
    def fit(cls, data: SimData) -> Scaling:
        std = data.cond.std(0)
        x_scale = 1.0 if data.is_image else float(np.abs(data.x).max())
        y_max = float(np.log1p(data.x.max())) if data.is_image else float(np.abs(data.x).max() / x_scale)
        return cls(data.cond.mean(0).tolist(), np.where(std > 0, std, 1.0).tolist(), x_scale, data.is_image, y_max)

    def cond(self, c: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((c - np.array(self.cond_mean)) / np.array(self.cond_std)).astype(np.float32))

    def x(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((np.log1p(x) if self.image else x / self.x_scale).astype(np.float32))

    def raw(self, y: torch.Tensor) -> np.ndarray:
        if not self.image:
            return (y * self.x_scale).numpy()
        # photon counts are integers: rounding removes the sub-photon haze a linear output leaves on
        # the ~2000 dark fibres (it added ~100 photons per channel); the clip to the training range
        # stops exp() from turning a small overshoot in log space into thousands of photons
        return torch.round(torch.expm1(y.clamp(0, self.y_max))).numpy()


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)), reduction="none")


class _Trainer:
    def __init__(self, data: SimData, cfg: SimTrainConfig, scaling: Scaling) -> None:
        self.cfg, self.scaling = cfg, scaling
        train = data.part(True)
        if len(train.x) < 2:
            raise GenleakError("the data file has fewer than 2 training samples")
        self.c, self.x = scaling.cond(train.cond), scaling.x(train.x)
        # MS-GAN: the same term with f_div = 1 for every condition
        fd = np.ones(len(train.x), np.float32) if cfg.model == "msgan" else f_div(train.x, train.group)
        self.fdiv = torch.from_numpy(fd)
        self.peak = torch.from_numpy(peak_coordinates(train.x)) if data.is_image else None
        torch.manual_seed(cfg.seed)
        self.model = SimModel(self.c.shape[1], tuple(self.x.shape[1:]), cfg.noise_dim, cfg.experts, cfg.width)
        betas = (0.5, 0.999)
        self.opts: dict[str, torch.optim.Optimizer] = {}
        for i, ex in enumerate(self.model.experts):
            self.opts[f"g{i}"] = torch.optim.Adam(ex.gen.parameters(), cfg.lr_g, betas=betas)
            self.opts[f"d{i}"] = torch.optim.Adam(ex.disc.parameters(), cfg.lr_d, betas=betas)
            if ex.aux is not None:
                self.opts[f"a{i}"] = torch.optim.Adam(ex.aux.parameters(), cfg.lr_aux, betas=betas)
        if self.model.router is not None:
            self.opts["router"] = torch.optim.Adam(self.model.router.parameters(), cfg.lr_router, betas=betas)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        lam_div, lam_in, lam_aux = cfg.lambdas()
        idx = torch.randint(len(self.x), (cfg.batch_size,), generator=self.gen)
        x, c, fd = self.x[idx], self.c[idx], self.fdiv[idx]
        z1 = torch.randn(len(idx), cfg.noise_dim, generator=self.gen)
        z2 = torch.randn(len(idx), cfg.noise_dim, generator=self.gen)
        if model.router is not None:
            r_logits = model.router(c)
            gates = gumbel_gates(r_logits, cfg.tau)
        else:
            gates = torch.ones(len(idx), 1)
        assign = gates.argmax(1)
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        g_total = torch.zeros(())
        stats = {"d_loss": 0.0, "g_adv": 0.0, "div": 0.0, "in": 0.0, "aux": 0.0}
        mean_int = []
        for i, ex in enumerate(model.experts):
            m = assign == i
            if not m.any():
                mean_int.append(None)
                continue
            xm, cm, nm = x[m], c[m], int(m.sum())
            cc = torch.cat([cm, cm])  # one call per network for both halves: fewer small ops on a CPU
            fake1, fake2 = ex.gen(torch.cat([z1[m], z2[m]]), cc).split(nm)
            # discriminator (and auxiliary regressor) on this expert's share of the batch
            logit_real, logit_fake = ex.disc(torch.cat([xm, fake1.detach()]), cc)[0].split(nm)
            d_loss = (_bce(logit_real, True) + _bce(logit_fake, False)).mean()
            d_loss.backward()
            self.opts[f"d{i}"].step()
            self.opts[f"d{i}"].zero_grad(set_to_none=True)
            stats["d_loss"] += d_loss.item()
            # generator terms, per sample (eq. 5.5)
            logits, feats = ex.disc(torch.cat([fake1, fake2]), cc)
            logit1, (e1, e2) = logits[:nm], feats.split(nm)
            per = _bce(logit1, True)
            stats["g_adv"] += per.mean().item()
            if lam_div:
                div = diversity_loss(fd[m], e1, e2, z1[m], z2[m])
                per = per + lam_div * div
                stats["div"] += div.mean().item()
            if x.dim() == 3:
                f_in = fake1.flatten(1).sum(1)
                if lam_in:
                    l_in = (xm.flatten(1).sum(1) - f_in).abs()
                    per = per + lam_in * l_in
                    stats["in"] += l_in.mean().item()
                if lam_aux and ex.aux is not None:
                    peak = self.peak[idx][m]
                    a_loss = F.mse_loss(ex.aux(xm), peak, reduction="none").sum(1).mean()
                    a_loss.backward()
                    self.opts[f"a{i}"].step()
                    l_aux = ((ex.aux(fake1) - peak) ** 2).sum(1)
                    per = per + lam_aux * l_aux
                    stats["aux"] += l_aux.mean().item()
                # the router learns through the gate value (1 forward, softmax gradient backward)
                mean_int.append((gates[m, i] * f_in.detach()).mean())
            g_total = g_total + (gates[m, i] * per).mean()
        if model.router is not None:
            p_bar = F.softmax(r_logits, 1).mean(0)
            l_util = (p_bar * torch.log(p_bar + 1e-8)).sum()  # negative entropy, minimised (digest §8.10)
            present = [v for v in mean_int if v is not None]
            l_diff = -sum(((a - b) ** 2 for j, a in enumerate(present) for b in present[j + 1:]), torch.zeros(()))
            g_total = g_total + cfg.lambda_util * l_util + cfg.lambda_diff * l_diff
            stats["util"], stats["diff"] = l_util.item(), l_diff.item()
        for ex in model.experts:  # the discriminators only got gradients from the generator loss here
            ex.disc.zero_grad(set_to_none=True)
            if ex.aux is not None:
                ex.aux.zero_grad(set_to_none=True)
        g_total.backward()
        for name, opt in self.opts.items():
            if name[0] == "g" or name == "router":
                opt.step()
        self.step += 1
        stats["g_loss"] = g_total.item()
        check_loss(stats["g_loss"], self.step)
        return stats

    # --- checkpoints ---------------------------------------------------------------------------
    def save(self, out: Path, history: list[dict[str, float]]) -> None:
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        groups: dict[str, Any] = {}
        for name, opt in self.opts.items():
            sd = opt.state_dict()
            groups[name] = sd["param_groups"]
            for pid, st in sd["state"].items():
                for key, val in st.items():
                    tensors[f"opt.{name}.{pid}.{key}"] = torch.as_tensor(val).contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.batches"] = self.gen.get_state()
        atomic_write_bytes(out / WEIGHTS_FILE, save(tensors))
        atomic_write_json(out / STATE_FILE, {"format": "genleak-sim-run", "version": 1, "step": self.step,
                                             "config": self.cfg.to_dict(), "scaling": self.scaling.__dict__,
                                             "shape": list(self.x.shape[1:]), "cond_dim": self.c.shape[1],
                                             "param_groups": groups, "history": history})

    def restore(self, out: Path, state: dict[str, Any]) -> None:
        tensors = load((out / WEIGHTS_FILE).read_bytes())
        self.model.load_state_dict(_prefixed(tensors, "model."))
        for name, opt in self.opts.items():
            st: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith(f"opt.{name}."):
                    pid, key = k.split(".")[2:]
                    st.setdefault(int(pid), {})[key] = v
            opt.load_state_dict({"state": st, "param_groups": state["param_groups"][name]})
        torch.set_rng_state(tensors["rng.torch"])
        self.gen.set_state(tensors["rng.batches"])
        self.step = int(state["step"])


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_state(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("format") != "genleak-sim-run":
        raise GenleakError(f"{path} is not a genleak sim run")
    return state


def train(data: SimData, cfg: SimTrainConfig, out: str | Path,
          progress: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run in ``out``; returns its state (config, step, history, seconds)."""
    cfg.check()
    out = Path(out)
    state = read_state(out)
    scaling = Scaling(**state["scaling"]) if state else Scaling.fit(data.part(True))
    trainer = _Trainer(data, cfg, scaling)
    history: list[dict[str, float]] = []
    if state:
        old = {k: v for k, v in state["config"].items() if k not in ("steps", "checkpoint_every")}
        new = {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "checkpoint_every")}
        if old != new:
            raise GenleakError(f"{out} holds a run with another config; pick a new --out")
        trainer.restore(out, state)
        history = state["history"]
    t0 = time.perf_counter()
    while trainer.step < cfg.steps:
        stats = trainer.train_step()
        if trainer.step % 50 == 0 or trainer.step == cfg.steps:
            history.append({"step": trainer.step, **{k: round(v, 5) for k, v in stats.items()}})
            if progress:
                progress(trainer.step, stats)
        if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps:
            trainer.save(out, history)
    state = read_state(out) or {}
    state["seconds"] = time.perf_counter() - t0
    return state


def load_run(out: str | Path) -> tuple[SimModel, Scaling, dict[str, Any]]:
    """The trained model (eval mode), its scaling and state from a run folder."""
    state = read_state(out)
    if state is None:
        raise GenleakError(f"{out}: no {STATE_FILE} (train a model there with `genleak sim train`)")
    cfg = SimTrainConfig.from_dict(state["config"])
    model = SimModel(state["cond_dim"], tuple(state["shape"]), cfg.noise_dim, cfg.experts, cfg.width)
    tensors = load((Path(out) / WEIGHTS_FILE).read_bytes())
    model.load_state_dict(_prefixed(tensors, "model."))
    return model.eval(), Scaling(**state["scaling"]), state


def generate(model: SimModel, scaling: Scaling, cond: np.ndarray, seed: int = 0,
             batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """One response per row of raw ``cond``: (raw-scale outputs, expert index per row)."""
    gen = torch.Generator().manual_seed(seed)
    outs, assigns = [], []
    for i in range(0, len(cond), batch):
        c = scaling.cond(cond[i:i + batch])
        y, a = model.sample(c, torch.randn(len(c), model.noise_dim, generator=gen), gen)
        outs.append(scaling.raw(y))
        assigns.append(a.numpy())
    return np.concatenate(outs), np.concatenate(assigns)
