"""Networks and losses of the ch. 4-5 simulators: conditional DC-GAN experts, the router, SDI-GAN's f_div.

One :class:`SimModel` covers every method: DC-GAN, MS-GAN and SDI-GAN are one expert and no router;
ExpertSim is K experts (generator, conditional discriminator, auxiliary regressor) and a router.
Points (the 2-D benchmark) get MLPs, images get small DCGAN-style convolutional nets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS_DIV = 1e-5  # MS-GAN's eps in 1 / (d_I / d_z + eps) (Mao et al. reference code)


def f_div_per_group(x: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thesis eq. 4.3: for each unique condition, the sum over pixels (coordinates) of the population std
    over the samples sharing it. Returns (group ids, raw f_div)."""
    ids, inv = np.unique(group, return_inverse=True)
    flat = x.reshape(len(x), -1).astype(np.float64)
    count = np.bincount(inv).astype(np.float64)[:, None]
    mean = np.zeros((len(ids), flat.shape[1]))
    np.add.at(mean, inv, flat)
    mean /= count
    sq = np.zeros_like(mean)
    np.add.at(sq, inv, (flat - mean[inv]) ** 2)
    return ids, np.sqrt(sq / count).sum(1)


def f_div(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per-sample f_div(c), min-max normalised to [0, 1] over the conditions (eq. 4.3; the reference code
    uses sklearn's MinMaxScaler). The least diverse condition gets 0, so it gets no diversity push."""
    ids, raw = f_div_per_group(x, group)
    lo, hi = raw.min(), raw.max()
    norm = (raw - lo) / (hi - lo) if hi > lo else (raw > 0).astype(np.float64)
    return norm[np.searchsorted(ids, group)].astype(np.float32)


def diversity_loss(fdiv: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor, z1: torch.Tensor,
                   z2: torch.Tensor) -> torch.Tensor:
    """Per-sample L_div = f_div(c) * (d_I / d_z)^-1 (eq. 4.4), d_I = mean L1 between discriminator
    features of the two samples (eqs. 4.6-4.7), d_z = L1 between the latent codes. f_div = 1 is
    MS-GAN's mode-seeking term (eq. 4.2)."""
    d_i = (e1 - e2).abs().flatten(1).sum(1)
    d_z = (z1 - z2).abs().sum(1)
    return fdiv / (d_i / d_z + EPS_DIV)


def gumbel_gates(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """One-hot gates in the forward pass, softmax gradients in the backward pass (straight-through
    Gumbel-softmax, as the ExpertSim code)."""
    return F.gumbel_softmax(logits, tau=tau, hard=True)


def _mlp(sizes: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    return nn.Sequential(*layers[:-1])


class Router(nn.Module):
    """9 -> 128 -> 64 -> 32 -> K with LeakyReLU 0.1 ([CODE] ExpertSim router); returns logits."""

    def __init__(self, cond_dim: int, k: int) -> None:
        super().__init__()
        self.net = _mlp([cond_dim, 128, 64, 32, k], 0.1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class PointGenerator(nn.Module):
    def __init__(self, noise_dim: int, cond_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = _mlp([noise_dim + cond_dim, hidden, hidden, 2], 0.2)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, c], 1))


class PointDiscriminator(nn.Module):
    """Returns (logit, features); the features (penultimate layer) are SDI-GAN's encoder E (eq. 4.6)."""

    def __init__(self, cond_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(_mlp([2 + cond_dim, hidden, hidden], 0.2), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(torch.cat([x, c], 1))
        return self.head(h).squeeze(1), h


class ImageGenerator(nn.Module):
    """DCGAN-style: (z, c) -> linear -> (2w, H/4, W/4) -> 2 strided transposed convs -> crop.
    Linear output, clipped to [0, max] only when sampling: an output ReLU died in our runs (all-zero
    images and no gradient back). No batch norm: an expert may get a batch of one."""

    def __init__(self, noise_dim: int, cond_dim: int, shape: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        self.shape, self.width = shape, width
        self.h0, self.w0 = math.ceil(shape[0] / 4), math.ceil(shape[1] / 4)
        self.fc = nn.Sequential(nn.Linear(noise_dim + cond_dim, 2 * width * self.h0 * self.w0), nn.ReLU())
        self.conv = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                                  nn.ConvTranspose2d(width, 1, 4, 2, 1))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, c], 1)).view(len(z), 2 * self.width, self.h0, self.w0)
        return self.conv(h)[:, 0, : self.shape[0], : self.shape[1]]


def _encoder(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 2 * width, 4, 2, 1),
                         nn.LeakyReLU(0.2), nn.Flatten())


def _encoded_size(shape: tuple[int, int], width: int) -> int:
    return 2 * width * (shape[0] // 4) * (shape[1] // 4)


class ImageDiscriminator(nn.Module):
    """Conditional: conv features of the image, concatenated with c, -> 128 features -> logit."""

    def __init__(self, cond_dim: int, shape: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        self.enc = _encoder(width)
        self.fc = nn.Sequential(nn.Linear(_encoded_size(shape, width) + cond_dim, 128), nn.LeakyReLU(0.2))
        self.head = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(torch.cat([self.enc(x[:, None]), c], 1))
        return self.head(h).squeeze(1), h


class AuxRegressor(nn.Module):
    """Predicts the (row, col) of the brightest fibre (ch. 5.4.1), in pixels as the reference code."""

    def __init__(self, shape: tuple[int, int], width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(_encoder(width), nn.Linear(_encoded_size(shape, width), 64), nn.ReLU(),
                                 nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, None])


class Expert(nn.Module):
    def __init__(self, noise_dim: int, cond_dim: int, shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        if len(shape) == 1:
            self.gen: nn.Module = PointGenerator(noise_dim, cond_dim)
            self.disc: nn.Module = PointDiscriminator(cond_dim)
            self.aux: nn.Module | None = None
        else:
            hw = (int(shape[0]), int(shape[1]))
            self.gen, self.disc = ImageGenerator(noise_dim, cond_dim, hw, width), ImageDiscriminator(cond_dim, hw, width)
            self.aux = AuxRegressor(hw, width)


class SimModel(nn.Module):
    """K experts and (for K > 1) a router. ``shape`` is (2,) for points or (H, W) for images."""

    def __init__(self, cond_dim: int, shape: tuple[int, ...], noise_dim: int = 10, experts: int = 1,
                 width: int = 32) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.experts = nn.ModuleList(Expert(noise_dim, cond_dim, shape, width) for _ in range(experts))
        self.router = Router(cond_dim, experts) if experts > 1 else None

    def route(self, c: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Expert index per condition at inference: a draw from the router's softmax, which is what the
        hard Gumbel gates draw in training (an argmax would send every condition to one expert wherever
        the logits barely depend on c; measured: usage 1.00 / 0.00 / 0.00 at K = 3)."""
        if self.router is None:
            return torch.zeros(len(c), dtype=torch.long)
        return torch.multinomial(torch.softmax(self.router(c), 1), 1, generator=gen)[:, 0]

    @torch.no_grad()
    def sample(self, c: torch.Tensor, z: torch.Tensor,
               gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs in training scale, expert index) for standardised conditions ``c``."""
        assign = self.route(c, gen)
        out = None
        for i, ex in enumerate(self.experts):
            m = assign == i
            if m.any():
                y = ex.gen(z[m], c[m])
                out = torch.zeros((len(c), *y.shape[1:])) if out is None else out
                out[m] = y
        return out, assign
