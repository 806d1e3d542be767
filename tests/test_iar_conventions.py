"""Issue 16 §4: the IAR MIA definitions where genleak differs from the thesis or the authors' code
(sprintml/privacy_attacks_against_iars, src/attacks/llm_mia.py, src/models/MAR.py), each pinned on
hand-computed numbers. The choices and reasons are in docs/conventions.md ("IAR attacks")."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from genleak.attacks.iar import TokenStats, stat_camia, stat_minkpp, zlib_length


def _stats(logp: list[list[float]], mu: list[list[float]] | None = None, sigma: list[list[float]] | None = None) -> TokenStats:
    lp = torch.tensor(logp, dtype=torch.float64)
    return TokenStats(logp=lp, tokens=torch.zeros_like(lp, dtype=torch.long),
                      mu=None if mu is None else torch.tensor(mu, dtype=torch.float64),
                      sigma=None if sigma is None else torch.tensor(sigma, dtype=torch.float64))


def test_minkpp_divides_by_the_standard_deviation_not_the_variance():
    """Thesis eq. D.2: (log p - mu) / sigma. The authors' code divides by sigma + 1e-6 where its
    ``sigma`` is the variance. genleak: the standard deviation (thesis). With sigma = 2 (variance 4)
    the token z-scores are -1.5 and 0.5; the lowest 50% (1 of 2 tokens) is -1.5 (the code: -0.75)."""
    s = _stats([[-4.0, 0.0]], mu=[[-1.0, -1.0]], sigma=[[2.0, 2.0]])
    got = float(stat_minkpp(s, 0.5))
    assert got == pytest.approx(-3.0 / (2.0 + 1e-6), rel=1e-12)
    assert got != pytest.approx(-3.0 / (4.0 + 1e-6), rel=1e-3)  # the authors' code's value


def test_camia_running_mean_and_orientation():
    """The authors' running mean is cumsum / (1..N), which includes the current token; genleak compares
    each token with the mean of the tokens before it. The two flag the same tokens
    (x < (k m + x) / (k + 1) <=> x < m for the mean m of k preceding tokens; the first token is never
    below either), so the count signal equals the authors' -(fraction below) exactly. The orientation
    differs: genleak reads every signal as higher = member (the authors': lower = member), and the slope
    of log p over positions is higher = member (the thesis' "members' loss falls faster")."""
    lp = torch.randn(64, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    authors = -(lp < lp.cumsum(1) / torch.arange(1, 41)).float().mean(1)
    ours = stat_camia(TokenStats(logp=lp, tokens=torch.zeros_like(lp, dtype=torch.long)), "count_below_prev_mean")
    torch.testing.assert_close(ours, authors, rtol=0, atol=0)
    n = 5
    falling = torch.linspace(-1.0, -3.0, n, dtype=torch.float64)[None]  # every later token below
    assert float(stat_camia(_stats(falling.tolist()), "count_below_prev_mean")) == pytest.approx(-(n - 1) / n)
    assert float(stat_camia(_stats([[-3.0, -2.0, -1.0]]), "slope")) == pytest.approx(1.0)  # rising log p: +1
    assert float(stat_camia(_stats([[-1.0, -4.0, -1.0, -2.0]]), "count_below_mean")) == pytest.approx(-0.25)  # mean -2: only -4 below


def test_zlib_length_compresses_the_raw_token_bytes_at_level_9():
    """The authors' code: len(zlib.compress(bytes(str(tokens.tolist()), 'utf-8'))) at the default
    level. genleak: level 9 on the int32 bytes of the ids; MAR tokens quantised to int8 (x32) first."""
    ids = torch.tensor([[5, 5, 5, 7, 1000, 3]])
    expect = len(zlib.compress(np.array([5, 5, 5, 7, 1000, 3], dtype=np.int32).tobytes(), 9))
    assert float(zlib_length(ids)[0]) == expect
    assert expect != len(zlib.compress(bytes(str([5, 5, 5, 7, 1000, 3]), "utf-8")))  # the authors' text encoding
    cont = torch.tensor([[[0.5, -0.25], [10.0, 0.0]]])
    q = np.array([[16, -8], [127, 0]], dtype=np.int8).tobytes()
    assert float(zlib_length(cont)[0]) == len(zlib.compress(q, 9))


def test_mar_masks_are_per_image_and_four_by_default():
    """The authors' MAR reseeds before each image (one shared permutation) with 1 mask; genleak draws a
    permutation per image from its own noise stream, 4 masks (IARAttackConfig.mask_draws), and
    round(0.95 N) masked tokens. Pinned with 1 mask at ratio 0.5 on a random-weight MAR: tokens never
    masked take the sample's mean loss, so the set of positions holding that value is the mask's
    complement: two identical images with different ids get different masks, the same id the same."""
    from genleak.attacks.base import NoiseSource
    from genleak.attacks.iar import IARAttackConfig
    from genleak.targets.iar import build_target

    assert IARAttackConfig().mask_draws == 4 and IARAttackConfig().mask_ratio == 0.95
    torch.manual_seed(0)
    t = build_target("mar", {"hidden": 8}, {"dim": 16, "depth": 1, "heads": 2, "head_width": 16, "head_depth": 1})
    x = torch.randn(1, t.sequence_length, 4).repeat(3, 1, 1)
    noise = NoiseSource(["a", "b", "a"], 0, "iar-features", x.shape[1:], x.device, torch.float32)
    loss = t.token_losses(x, torch.zeros(3, dtype=torch.long), noise=noise, mask_ratio=0.5, mask_draws=1,
                          noise_draws=2)
    unmasked = [set(torch.nonzero(row == _fill(row), as_tuple=True)[0].tolist()) for row in loss]
    assert len(unmasked[0]) == t.sequence_length - round(0.5 * t.sequence_length)
    assert unmasked[0] == unmasked[2] and unmasked[0] != unmasked[1]


def _fill(row: torch.Tensor) -> torch.Tensor:
    """The fallback value of never-masked tokens: the value that repeats most in the row."""
    vals, counts = torch.unique(row, return_counts=True)
    return vals[counts.argmax()]


def test_ceil_k_tokens_for_mink():
    """Min-K% token count: the authors' code int(K N); genleak ceil(K N), at least one token."""
    from genleak.attacks.iar import stat_mink

    s = _stats([[-1.0, -2.0, -3.0, -4.0, -5.0]])
    assert float(stat_mink(s, 0.3)) == pytest.approx((-5.0 - 4.0) / 2)  # ceil(1.5) = 2 tokens (code: 1)
    assert math.ceil(0.3 * 5) == 2
