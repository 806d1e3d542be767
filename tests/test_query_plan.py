"""Issue 14 §4, the query plan: attacks scored together (``genleak.scoring``, chunk-major through
``attacks.base.score_together``) give bit for bit the scores each gets alone, while the denoiser
runs each distinct query of a batch once: pia, pian and SecMI all start with eps(x0, 0).

Tiny random (untrained) targets: the scores are real, deterministic numbers, which is all these
identities need. The forwards are counted on the network itself (a forward pre-hook on the UNet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genleak.attacks import get_attack
from genleak.attacks.base import score_together
from genleak.data import make_split
from genleak.errors import GenleakError
from genleak.scoring import query_counts, score_images, score_split

CORE = ("loss", "secmi", "pia", "pian", "sima")


@pytest.fixture(scope="module")
def split(digits8):
    return make_split(digits8, 10, 7, seed=0)


class Forwards:
    """Counts the samples that go through ``net`` (one per sample per forward)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.n = 0
        self.handle = net.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.n += args[0].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_together_is_alone_bit_for_bit_with_fewer_forwards(pixel, split):
    attacks = [get_attack(n) for n in CORE]
    alone = {}
    with Forwards(pixel.unet) as f:
        for a in attacks:
            alone[a] = score_split(pixel, split, [a], batch_size=4, progress=False)[a]
    n = len(split.members) + len(split.nonmembers)
    nfe = sum(a.nfe for a in attacks)
    assert nfe == 5 + 12 + 2 + 2 + 1 and f.n == nfe * n  # alone: every attack runs all its queries
    with Forwards(pixel.unet) as f:
        together = score_split(pixel, split, attacks, batch_size=4, progress=False)
    for a in attacks:
        for side in ("members", "nonmembers"):
            np.testing.assert_array_equal(getattr(together[a], side).values, getattr(alone[a], side).values,
                                          err_msg=f"{a.name} {side}")
    # pia, pian and SecMI's first inversion step all ask eps(x0, 0): it runs once, 2 of 22 saved
    assert f.n == (nfe - 2) * n
    assert query_counts(together) == {"samples": n, "attacks_nfe": nfe, "run": nfe - 2}
    assert query_counts(alone) == {"samples": n, "attacks_nfe": nfe, "run": nfe}


def test_pia_pian_share_and_sima_at_t0_joins(pixel, split):
    images = split.members
    for names, distinct in ((("pia", "pian"), 3), (("pia", "pian", "sima"), 3)):
        attacks = [get_attack(n, **({"t": 0} if n == "sima" else {})) for n in names]
        want = [a.score(pixel, images.images, images.ids, batch_size=3, progress=False).numpy() for a in attacks]
        with Forwards(pixel.unet) as f:
            got = score_images(pixel, images, attacks, batch_size=3, progress=False)
        assert f.n == distinct * len(images)  # pia + pian: 3 per sample, not 4; SimA at t=0 adds none
        for a, w in zip(attacks, want, strict=True):
            np.testing.assert_array_equal(got[a].values, w, err_msg=a.name)
        assert query_counts(got)["run"] == distinct
    # SimA at its default t = 20 asks another query: nothing of it is shared
    sima = get_attack("sima")
    with Forwards(pixel.unet) as f:
        got = score_images(pixel, images, [get_attack("pia"), sima], batch_size=3, progress=False)
    assert f.n == 3 * len(images) and got[sima].shared == 0


def test_an_attack_that_raises_is_left_out_and_the_others_keep_their_numbers(pixel, split):
    pia, pian, secmi = get_attack("pia"), get_attack("pian"), get_attack("secmi", t_sec=1100, interval=10)
    errors = []
    got = score_split(pixel, split, [pia, secmi, pian], batch_size=4, progress=False,
                      on_error=lambda a, err: errors.append((a.name, str(err))))
    assert [name for name, _ in errors] == ["secmi"] and "exceeds" in errors[0][1]
    assert set(got) == {pia, pian}
    for a in (pia, pian):
        np.testing.assert_array_equal(got[a].members.values, a.score(pixel, split.members.images, split.members.ids,
                                                                     batch_size=4, progress=False).numpy())
    with pytest.raises(ValueError, match="exceeds"):  # without on_error the error is raised
        score_split(pixel, split, [pia, secmi], batch_size=4, progress=False)
    assert "eps" not in vars(pixel)  # the plan's wrapper is gone, even after an error


def test_a_latent_target_encodes_each_batch_once(digits8):
    from genleak.targets.latent import LatentDiffusionTarget, build_latent_unet, build_vae, sd_scheduler

    torch.manual_seed(0)
    latent = LatentDiffusionTarget(build_vae(8, 1, (16, 32), 4), build_latent_unet(4, 4, (32, 64), 1), sd_scheduler(),
                                   device="cpu")
    images = make_split(digits8, 6, 6, seed=1).members
    # denoise-process wraps the target in its own ``score`` (its pixel error is against the query pixels,
    # not the VAE's round trip), so it is scored alone, through that ``score``
    process = get_attack("denoise-process", preset="baseline", unet_timesteps=[50], noise_timesteps=[50], n_draws=1)
    attacks = [get_attack(n) for n in ("pia", "pian", "sima")] + [process]
    want = [a.score(latent, images.images, images.ids, batch_size=4, progress=False).numpy() for a in attacks]
    for key in latent.counters:
        latent.counters[key] = 0
    got = score_images(latent, images, attacks, batch_size=4, progress=False)
    # pia + pian + sima: 4 queries and 1 encoding per sample, not 5 and 3; denoise-process: its own 1 and 1
    assert (latent.counters["unet"], latent.counters["vae_encode"]) == (5 * 6, 2 * 6)
    for a, w in zip(attacks, want, strict=True):
        np.testing.assert_array_equal(got[a].values, w, err_msg=a.name)
    with pytest.raises(GenleakError, match="scores through its own score"):  # never mixed into a plan
        score_together([process, attacks[0]], latent, images)
