"""Membership inference attacks on IARs: LLM MIAs on per-token log-probabilities, plain or on the
classifier-free-guidance difference (thesis ch. 9.5.1, supp. D.5.2, D.8, Tables 9.5.1, D.9.1-D.9.4).

One teacher-forced forward pass gives the logits of every token (VAR: every token of every scale;
RAR: every raster position). From the per-token log-probabilities the classic LLM attacks read:

============  ==========================================================================  ==============
name          per-sample statistic (higher = member)                                       paper
============  ==========================================================================  ==============
``loss``      mean_i log p(t_i | t_<i, c)                                                  Yeom et al.
``zlib``      mean_i log p(t_i) / zlib length of the token ids                             Carlini et al.
``mink``      mean of the lowest K% token log-probs                                        Shi et al.
``minkpp``    mean of the lowest K% of (log p(t_i) - mu_i) / sigma_i over the vocabulary  Zhang et al.
``hinge``     mean_i (logit of t_i - largest other logit)                                  Bertran et al.
``surp``      mean log p over "surprising" tokens: entropy < eps and log p <= K%-quantile  Zhang & Wu
``camia``     one of CAMIA's context signals (count/mean below mean, slope)                Chang et al.
============  ==========================================================================  ==============

**CFG difference** (``cfg_diff=True``, names ending ``-cfg``): the logits are replaced by
``l(t | c) - l(t | c_null)`` — the class-conditional minus the null-class logits, two passes per
image (batched into one) — and every statistic above is computed from them exactly as from plain
logits (ch. 9.5.1 "we compute p(x|c) - p(x|c_null) ... and use this difference as an input to MIAs,
instead of per-token logits"; as in the authors' code, the difference is taken on logits and then
normalised with log-softmax). The null-class pass acts as a built-in reference model.

**MAR** (continuous tokens): there are no logits, so ``minkpp``, ``hinge`` and ``surp`` do not
apply (ch. 9.5.1, "Our MIAs for MARs"); ``loss``, ``zlib``, ``mink`` and ``camia`` read -(per-token
diffusion loss) in place of log p, computed with the three MAR improvements of supp. D.8: mask ratio
0.95 (Table D.8.1), a fixed diffusion timestep t = 500 (Table D.8.2) and the mean over 64 noise draws
(Table D.8.3), averaged over ``mask_draws`` random masks. With ``cfg_diff`` the statistic reads
loss(c_null) - loss(c) per token.

Hyperparameters the thesis reports "for the best K" (Min-K%, Min-K%++: K in {10..50}; SURP: K and
the entropy bound eps in {2, 4, 8, 16}; supp. D.5.2) and CAMIA's signal are chosen by
:func:`calibrate` on a calibration split, never on the evaluation labels.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource
from genleak.errors import GenleakError
from genleak.targets.base import TargetKind

# Supp. D.5.2: "K is a hyperparameter, selected from {10, 20, 30, 40, 50}" (Min-K%, Min-K%++, SURP).
K_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
# Supp. D.5.2, SURP: "eps_e in {2, 4, 8, 16}" (entropy bound, nats).
ENTROPY_GRID: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
CAMIA_SIGNALS: tuple[str, ...] = ("mean_below_mean", "mean_below_prev_mean", "count_below_mean",
                                  "count_below_prev_mean", "slope")
FAMILIES: tuple[str, ...] = ("loss", "zlib", "mink", "minkpp", "hinge", "surp", "camia")
LOSS_FAMILIES: tuple[str, ...] = ("loss", "zlib", "mink", "camia")  # the ones that apply to MAR


# ----------------------------------------------------------------------------------------------
# Per-token quantities
# ----------------------------------------------------------------------------------------------
@dataclass
class TokenStats:
    """Per-token quantities, all (B, N): what every LLM MIA is computed from.

    ``logp``: log-probability of the true token; ``mu``/``sigma``: mean and std of log p over the
    vocabulary under the model's own distribution (Min-K%++, eq. D.2); ``entropy``: Shannon entropy
    of the predicted distribution (SURP, eq. D.4); ``margin``: true-token logit minus the largest
    other logit (Hinge). For MAR only ``logp`` (= -diffusion loss) is set.
    """

    logp: torch.Tensor
    tokens: torch.Tensor
    mu: torch.Tensor | None = None
    sigma: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    margin: torch.Tensor | None = None


def iar_logits(target: Any, tokens: torch.Tensor, labels: torch.Tensor, cfg_diff: bool) -> torch.Tensor:
    """Conditional logits, or conditional minus null-class logits (one batched 2B pass)."""
    if not cfg_diff:
        return target.logits(tokens, labels)
    null = torch.full_like(labels, target.null_class)
    both = target.logits(torch.cat([tokens, tokens]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return cond - uncond


def stats_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> TokenStats:
    logits = logits.float()
    logprobs = F.log_softmax(logits, dim=-1)
    probs = logprobs.exp()
    logp = logprobs.gather(-1, tokens[..., None]).squeeze(-1)
    mu = (probs * logprobs).sum(-1)
    var = (probs * logprobs.square()).sum(-1) - mu.square()
    true_logit = logits.gather(-1, tokens[..., None]).squeeze(-1)
    others = logits.scatter(-1, tokens[..., None], float("-inf"))
    return TokenStats(logp=logp, tokens=tokens, mu=mu, sigma=var.clamp_min(0).sqrt(), entropy=-mu,
                      margin=true_logit - others.max(-1).values)


def token_stats(
    target: Any,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    cfg_diff: bool,
    noise: NoiseSource | None = None,
    mar: dict[str, Any] | None = None,
) -> TokenStats:
    """Per-token quantities of ``target`` on ``tokens`` (discrete) or latents (MAR)."""
    if target.discrete:
        return stats_from_logits(iar_logits(target, tokens, labels, cfg_diff), tokens)
    opts = dict(mar or {})
    if cfg_diff:
        losses, losses_null = target.token_losses(tokens, labels, noise=noise, with_null=True, **opts)
        return TokenStats(logp=losses_null - losses, tokens=tokens)
    return TokenStats(logp=-target.token_losses(tokens, labels, noise=noise, **opts), tokens=tokens)


# ----------------------------------------------------------------------------------------------
# Statistics (per sample, higher = member)
# ----------------------------------------------------------------------------------------------
def _lowest(x: torch.Tensor, frac: float) -> torch.Tensor:
    """The ceil(frac * N) smallest values of each row (at least one)."""
    k = max(1, math.ceil(frac * x.shape[1]))
    return torch.topk(x, k, dim=1, largest=False).values


def zlib_length(tokens: torch.Tensor) -> torch.Tensor:
    """zlib-compressed size in bytes of each sample's token sequence (continuous tokens are
    quantised to int8 first): the model-agnostic complexity the Zlib attack divides by."""
    rows = []
    for t in tokens.detach().cpu():
        if t.is_floating_point():
            data = (t * 32).round().clamp(-127, 127).to(torch.int8).numpy().tobytes()
        else:
            data = t.to(torch.int32).numpy().tobytes()
        rows.append(len(zlib.compress(data, 9)))
    return torch.tensor(rows, dtype=torch.float32)


def stat_loss(s: TokenStats) -> torch.Tensor:
    return s.logp.mean(1)


def stat_zlib(s: TokenStats) -> torch.Tensor:
    return s.logp.mean(1) / zlib_length(s.tokens).to(s.logp.device)


def stat_mink(s: TokenStats, k: float) -> torch.Tensor:
    return _lowest(s.logp, k).mean(1)


def stat_minkpp(s: TokenStats, k: float) -> torch.Tensor:
    z = (s.logp - s.mu) / (s.sigma + 1e-6)  # eq. D.2 (standard deviation, as written there)
    return _lowest(z, k).mean(1)


def stat_hinge(s: TokenStats) -> torch.Tensor:
    return s.margin.mean(1)


def stat_surp(s: TokenStats, k: float, max_entropy: float) -> torch.Tensor:
    """Eq. D.4-D.5: mean log p over tokens with entropy < eps and log p <= the K% quantile of the
    sample's log p. A sample without surprising tokens scores 0 (the most member-like value)."""
    tau = _lowest(s.logp, k).max(1, keepdim=True).values
    mask = (s.entropy < max_entropy) & (s.logp <= tau)
    total = (s.logp * mask).sum(1)
    count = mask.sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def stat_camia(s: TokenStats, signal: str) -> torch.Tensor:
    """CAMIA's context signals on the log-prob trajectory (Chang et al. 2024; supp. D.5.2).

    ``mean_below_*``: mean log p of the tokens below the sample mean / below the running mean of
    the preceding tokens (members' hard tokens are less hard); ``count_below_*``: minus the
    fraction of such tokens; ``slope``: least-squares slope of log p over positions (members'
    loss falls faster along the sequence).
    """
    lp = s.logp
    n = lp.shape[1]
    if signal in ("mean_below_mean", "count_below_mean"):
        below = lp < lp.mean(1, keepdim=True)
    elif signal in ("mean_below_prev_mean", "count_below_prev_mean"):
        running = lp.cumsum(1) / torch.arange(1, n + 1, device=lp.device)
        prev = torch.cat([running[:, :1], running[:, :-1]], dim=1)
        below = lp < prev
    elif signal == "slope":
        x = torch.arange(n, dtype=lp.dtype, device=lp.device)
        xc = x - x.mean()
        return ((lp - lp.mean(1, keepdim=True)) * xc).sum(1) / xc.square().sum()
    else:
        raise GenleakError(f"unknown CAMIA signal '{signal}'; choose from {', '.join(CAMIA_SIGNALS)}")
    if signal.startswith("count"):
        return -below.float().mean(1)
    count = below.sum(1)
    mean_below = (lp * below).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, mean_below, lp.mean(1))


def statistic(family: str, s: TokenStats, params: dict[str, Any]) -> torch.Tensor:
    """Dispatch one family's statistic with its hyperparameters."""
    if family == "loss":
        return stat_loss(s)
    if family == "zlib":
        return stat_zlib(s)
    if family == "mink":
        return stat_mink(s, params["k"])
    if family == "camia":
        return stat_camia(s, params["signal"])
    if s.mu is None:
        raise GenleakError(f"attack '{family}' needs logits; MAR has continuous tokens (use {', '.join(LOSS_FAMILIES)})")
    if family == "minkpp":
        return stat_minkpp(s, params["k"])
    if family == "hinge":
        return stat_hinge(s)
    if family == "surp":
        return stat_surp(s, params["k"], params["max_entropy"])
    raise GenleakError(f"unknown IAR attack family '{family}'")


# ----------------------------------------------------------------------------------------------
# Registered attacks
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IARAttackConfig(AttackConfig):
    """Shared settings. ``cfg_diff``: use conditional minus null-class logits (ch. 9.5.1).

    The MAR settings are ignored on VAR/RAR targets: mask ratio 0.95 (supp. D.8, Table D.8.1),
    fixed timestep 500 (Table D.8.2), 64 noise draws (Table D.8.3), over ``mask_draws`` masks.
    """

    cfg_diff: bool = False
    mask_ratio: float = 0.95
    timestep: int | None = 500  # None: random t per draw (the training loss; Table 9.5.2 baseline)
    noise_draws: int = 64
    mask_draws: int = 4

    def mar_options(self) -> dict[str, Any]:
        return {"mask_ratio": self.mask_ratio, "timestep": self.timestep, "noise_draws": self.noise_draws,
                "mask_draws": self.mask_draws}


@dataclass(frozen=True)
class KConfig(IARAttackConfig):
    k: float = 0.2  # fraction of tokens; the thesis sweeps {0.1..0.5} (supp. D.5.2): use calibrate()


@dataclass(frozen=True)
class SurpConfig(IARAttackConfig):
    k: float = 0.2
    max_entropy: float = 2.0  # eps_e, swept over {2, 4, 8, 16} (supp. D.5.2): use calibrate()


@dataclass(frozen=True)
class CamiaConfig(IARAttackConfig):
    signal: str = "mean_below_mean"  # one of CAMIA_SIGNALS: use calibrate()


class IARAttack(Attack):
    """Base of the IAR attacks: ``encode`` gave tokens; one (or two, CFG) passes give the stats.

    Each family is one class, ``iar-<family>``, with a ``-cfg`` subclass that defaults to the CFG
    difference (``cfg_diff``; an explicit config is used as given).
    """

    access = Access.GRAY_BOX  # per-token logits / per-token losses, no gradients
    kinds = frozenset({TargetKind.IAR})
    family: ClassVar[str] = ""
    cfg_default: ClassVar[bool] = False
    paper = "Kowalczyk, Dubinski et al., 'Privacy Attacks on Image AutoRegressive Models' (thesis ch. 9)"

    def __init__(self, config: AttackConfig | None = None, **overrides: Any) -> None:
        if config is None and self.cfg_default:
            overrides.setdefault("cfg_diff", True)
        super().__init__(config, **overrides)

    @property
    def nfe(self) -> int:
        """Model forward passes per image (2 with CFG difference; MAR: x masks)."""
        passes = 2 if self.config.cfg_diff else 1
        return passes

    def params(self) -> dict[str, Any]:
        c = self.config
        return {k: getattr(c, k) for k in ("k", "max_entropy", "signal") if hasattr(c, k)}

    def score_batch(self, target: Any, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise GenleakError(f"attack '{self.name}' needs class labels (cond=...) for the class-conditional IAR")
        labels = target.labels(cond)
        if not target.discrete and self.family not in LOSS_FAMILIES:
            raise GenleakError(f"attack '{self.name}' needs logits; MAR has continuous tokens "
                               f"(use {', '.join('iar-' + f for f in LOSS_FAMILIES)})")
        s = token_stats(target, x0, labels, self.config.cfg_diff, noise, self.config.mar_options())
        return statistic(self.family, s, self.params())


class IARLossAttack(IARAttack):
    """Loss attack: mean per-token log-probability (Yeom et al. 2018)."""

    name, family, config_class = "iar-loss", "loss", IARAttackConfig


class IARLossCFGAttack(IARLossAttack):
    name, cfg_default = "iar-loss-cfg", True


class IARZlibAttack(IARAttack):
    """Zlib ratio: mean log-probability over zlib length (Carlini et al. 2021)."""

    name, family, config_class = "iar-zlib", "zlib", IARAttackConfig


class IARZlibCFGAttack(IARZlibAttack):
    name, cfg_default = "iar-zlib-cfg", True


class IARMinkAttack(IARAttack):
    """Min-K% Prob: mean of the lowest K% token log-probs (Shi et al. 2024)."""

    name, family, config_class = "iar-mink", "mink", KConfig


class IARMinkCFGAttack(IARMinkAttack):
    name, cfg_default = "iar-mink-cfg", True


class IARMinkppAttack(IARAttack):
    """Min-K%++: lowest K% of vocabulary-normalised log-probs (Zhang et al. 2024, eq. D.2)."""

    name, family, config_class = "iar-minkpp", "minkpp", KConfig


class IARMinkppCFGAttack(IARMinkppAttack):
    name, cfg_default = "iar-minkpp-cfg", True


class IARHingeAttack(IARAttack):
    """Hinge: true-token logit minus the largest other (Bertran et al. 2024)."""

    name, family, config_class = "iar-hinge", "hinge", IARAttackConfig


class IARHingeCFGAttack(IARHingeAttack):
    name, cfg_default = "iar-hinge-cfg", True


class IARSurpAttack(IARAttack):
    """SURP: mean log-prob of low-entropy low-probability tokens (eq. D.4-D.5)."""

    name, family, config_class = "iar-surp", "surp", SurpConfig


class IARSurpCFGAttack(IARSurpAttack):
    name, cfg_default = "iar-surp-cfg", True


class IARCamiaAttack(IARAttack):
    """CAMIA: context-aware signals of the log-prob trajectory (Chang et al. 2024)."""

    name, family, config_class = "iar-camia", "camia", CamiaConfig


class IARCamiaCFGAttack(IARCamiaAttack):
    name, cfg_default = "iar-camia-cfg", True


def iar_attack_names(discrete: bool = True, cfg: bool | None = None) -> list[str]:
    """Registered IAR attack names: all families (VAR/RAR) or the loss families (MAR);
    ``cfg`` None gives both variants, True only ``-cfg``, False only plain."""
    fams = FAMILIES if discrete else LOSS_FAMILIES
    out = []
    for f in fams:
        if cfg is not True:
            out.append(f"iar-{f}")
        if cfg is not False:
            out.append(f"iar-{f}-cfg")
    return out


# ----------------------------------------------------------------------------------------------
# All features from one pass: calibration, dataset inference, benchmarks
# ----------------------------------------------------------------------------------------------
def feature_grid(discrete: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """Every (family, params) the sweep covers (supp. D.5.2 grids)."""
    out: list[tuple[str, dict[str, Any]]] = [("loss", {}), ("zlib", {})]
    out += [("mink", {"k": k}) for k in K_GRID]
    out += [("camia", {"signal": s}) for s in CAMIA_SIGNALS]
    if discrete:
        out += [("hinge", {})]
        out += [("minkpp", {"k": k}) for k in K_GRID]
        out += [("surp", {"k": k, "max_entropy": e}) for k in K_GRID for e in ENTROPY_GRID]
    return out


def feature_name(family: str, params: dict[str, Any], cfg_diff: bool) -> str:
    tail = "".join(f"@{k}={v}" for k, v in sorted(params.items()))
    return f"iar-{family}{'-cfg' if cfg_diff else ''}{tail}"


@dataclass(frozen=True)
class IARFeaturesConfig(AttackConfig):
    """Which statistics: the target's token kind (``feature_grid``), the variants (plain, CFG
    difference) and the MAR settings of ``IARAttackConfig``."""

    discrete: bool = True
    variants: tuple[bool, ...] = (False, True)
    mask_ratio: float = IARAttackConfig.mask_ratio
    timestep: int | None = IARAttackConfig.timestep
    noise_draws: int = IARAttackConfig.noise_draws
    mask_draws: int = IARAttackConfig.mask_draws


class IARFeatures(Attack):
    """Every statistic of :func:`feature_grid` as columns, from one pass (two with CFG) per batch: the
    feature matrix of :func:`calibrate` and dataset inference, scored (and cached) like any attack by
    ``genleak.scoring``. Not registered: it is a feature extractor, not one MIA."""

    name = "iar-features"  # also the MAR noise stream
    access = Access.GRAY_BOX
    kinds = frozenset({TargetKind.IAR})
    config_class = IARFeaturesConfig

    @classmethod
    def for_target(cls, target: Any, cfg_diff: bool | Sequence[bool] = (False, True),
                   mar: dict[str, Any] | None = None) -> IARFeatures:
        variants = (cfg_diff,) if isinstance(cfg_diff, bool) else tuple(cfg_diff)
        return cls(discrete=bool(target.discrete), variants=variants, **(mar or {}))

    @property
    def nfe(self) -> int:
        return len(self.config.variants)

    @property
    def columns(self) -> list[str]:
        grid = feature_grid(self.config.discrete)
        return [feature_name(fam, params, cfg) for cfg in self.config.variants for fam, params in grid]

    def score_batch(self, target: Any, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise GenleakError("IAR features need class labels (cond=...) for the class-conditional IAR")
        if bool(target.discrete) != self.config.discrete:
            raise GenleakError("IAR features built for another token kind than the target's; use IARFeatures.for_target")
        labels = target.labels(cond)
        c = self.config
        mar_pair = None
        if not target.discrete:  # one set of masks/noises serves both variants (cond and null losses)
            mar_pair = target.token_losses(x0, labels, noise=noise, with_null=True, mask_ratio=c.mask_ratio,
                                           timestep=c.timestep, noise_draws=c.noise_draws, mask_draws=c.mask_draws)
        cols = []
        for cfg in c.variants:
            if mar_pair is None:
                s = token_stats(target, x0, labels, cfg)
            else:
                lc, ln = mar_pair
                s = TokenStats(logp=(ln - lc) if cfg else -lc, tokens=x0)
            cols += [statistic(fam, s, params).float() for fam, params in feature_grid(c.discrete)]
        return torch.stack(cols, dim=1)


def features_dict(attack: IARFeatures, values: np.ndarray) -> dict[str, np.ndarray]:
    """``{feature_name: (N,) float64}`` from the (N, columns) scores of ``attack``."""
    return {name: values[:, j].astype(np.float64) for j, name in enumerate(attack.columns)}


def iar_features(
    target: Any,
    images: torch.Tensor,
    labels: Any,
    ids: Sequence[str] | None = None,
    *,
    cfg_diff: bool | Sequence[bool] = (False, True),
    batch_size: int = 64,
    seed: int = 0,
    mar: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Every statistic of :func:`feature_grid` for every image (:class:`IARFeatures`):
    ``{feature_name: (N,) array}``, all oriented higher = member. MAR noise is seeded per sample id
    like the attacks. ``genleak.scoring.score_images`` gives the same, cached.
    """
    attack = IARFeatures.for_target(target, cfg_diff, mar)
    values = attack.score(target, images, ids, cond=labels, batch_size=batch_size, seed=seed, progress=progress,
                          desc="iar features")
    return features_dict(attack, values.numpy())


@dataclass
class Calibration:
    """Best hyperparameters per attack name, chosen on a calibration split, with the evidence."""

    params: dict[str, dict[str, Any]]
    table: dict[str, dict[str, float]]  # feature name -> {"auc", "tpr@1%"} on the calibration split
    metric: str = "tpr@1%fpr"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "params": self.params, "table": self.table}


def calibrate(
    member_features: dict[str, np.ndarray], nonmember_features: dict[str, np.ndarray]
) -> Calibration:
    """Pick each attack's hyperparameters (K, eps, CAMIA signal) on CALIBRATION features.

    The thesis reports "the final value ... for the best K" (supp. D.5.2); choosing it on the
    evaluation data would peek at the labels, so it is chosen here on a separate calibration split
    by TPR@1%FPR (the thesis' headline metric), ties broken by AUC. Metrics from genleak.metrics.
    """
    from genleak.metrics import auc, tpr_at_fpr

    table: dict[str, dict[str, float]] = {}
    for name in member_features:
        m, nm = member_features[name], nonmember_features[name]
        table[name] = {"auc": auc(m, nm), "tpr@1%fpr": tpr_at_fpr(m, nm, 0.01)}
    best: dict[str, tuple[tuple[float, float], dict[str, Any]]] = {}
    for name, row in table.items():
        attack, params = _parse_feature_name(name)
        key = (row["tpr@1%fpr"], row["auc"])
        if attack not in best or key > best[attack][0]:
            best[attack] = (key, params)
    return Calibration(params={a: p for a, (_, p) in best.items()}, table=table)


def _parse_feature_name(name: str) -> tuple[str, dict[str, Any]]:
    parts = name.split("@")
    params: dict[str, Any] = {}
    for p in parts[1:]:
        k, v = p.split("=", 1)
        try:
            params[k] = float(v)
        except ValueError:
            params[k] = v
    return parts[0], params


def group_scores(
    target: Any, images: torch.Tensor, labels: Any, *, cfg_diff: bool = False, batch_size: int = 64
) -> np.ndarray:
    """Mean token log-probability per token group, (N, G): per scale for VAR, per raster position
    for RAR (the "VAR per scale, RAR per position" view of ch. 9.5.1) — which part of the sequence
    carries the membership signal. Discrete targets only."""
    if not target.discrete:
        raise GenleakError("group_scores needs token logits (VAR/RAR); MAR has continuous tokens")
    groups = target.token_groups()
    n_groups = int(groups.max()) + 1
    lab = target.labels(labels)
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = target.encode(images[start : start + batch_size])
            s = stats_from_logits(iar_logits(target, x, lab[start : start + batch_size], cfg_diff), x)
            g = groups.to(s.logp.device)
            sums = torch.zeros(s.logp.shape[0], n_groups, device=s.logp.device).index_add_(1, g, s.logp)
            out.append((sums / torch.bincount(g, minlength=n_groups)).cpu())
    return torch.cat(out).numpy().astype(np.float64)
