"""The CDI-only features (Multiple Loss, Gradient Masking, Noise Optimization) as registered attacks:
shapes, costs, batch invariance, and a membership signal on the tiny overfit DDPM."""

from __future__ import annotations

import pytest
import torch

from genleak.attacks import Access, get_attack
from genleak.metrics import auc
from genleak.targets.base import q_sample


def test_registered_with_columns_access_and_cost():
    ml, gm, no = get_attack("multiloss"), get_attack("gradmask"), get_attack("noiseopt")
    assert ml.config.timesteps == tuple(range(0, 1000, 100))  # thesis ch. 8.4.1
    assert ml.columns == [f"multiloss@t{t}" for t in range(0, 1000, 100)] and ml.nfe == 10
    assert ml.access is Access.GRAY_BOX and not ml.needs_grad
    assert gm.config.mask_fraction == 0.2 and len(gm.columns) == 10
    assert gm.access is Access.WHITE_BOX and gm.needs_grad and gm.nfe == 20 and gm.n_backward == 10
    assert no.config.t == 100 and no.config.steps == 5
    assert no.columns == ["noiseopt_loss", "noiseopt_delta"] and no.access is Access.WHITE_BOX
    assert get_attack("multiloss", timesteps=[100, 200]).columns == ["multiloss@t100", "multiloss@t200"]


@pytest.mark.parametrize("name", ["multiloss", "gradmask", "noiseopt"])
def test_features_do_not_depend_on_batching(overfit_ddpm, name):
    a = get_attack(name)
    x = overfit_ddpm.split.members[:10]
    runs = [a.score(overfit_ddpm.target, x.images, x.ids, batch_size=bs, progress=False) for bs in (1, 4, 10)]
    assert runs[0].shape == (10, len(a.columns))
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-4, atol=1e-5)


def test_noiseopt_lowers_the_loss_it_optimises(overfit_ddpm):
    a = get_attack("noiseopt")
    x = overfit_ddpm.split.nonmembers[:8]
    out = a.score(overfit_ddpm.target, x.images, x.ids, progress=False)
    # the starting loss (delta = 0) with the same per-sample noise the attack draws
    from genleak.attacks.base import NoiseSource

    noise = NoiseSource(x.ids, 0, "noiseopt", x.images.shape[1:], torch.device("cpu"), torch.float32).draw(1)[:, 0]
    with torch.no_grad():
        x_t = q_sample(overfit_ddpm.target, x.images, 100, noise)
        start = (overfit_ddpm.target.eps(x_t, 100) - noise).pow(2).flatten(1).sum(1)
    final = -out[:, 0]
    assert torch.all(final <= start + 1e-4), (final, start)
    assert torch.all(final < start).item() or bool((final < 0.9 * start).any())
    assert torch.all(out[:, 1] < 0)  # -||delta||^2: the optimiser moved


def test_new_features_carry_membership_signal(overfit_ddpm):
    """Each feature's column (timestep) is chosen on a calibration half (members[:32] vs
    non-members[:32]) and its AUC asserted on the other, disjoint half, so no setting is picked by
    looking at the evaluation labels. Measured: multiloss@t100 0.980, noiseopt_delta 0.931,
    gradmask@t300 0.715; the floors sit below those and >= 2 sd above chance (sd ~0.07 at 32 vs 32)."""
    m, n = overfit_ddpm.split.members, overfit_ddpm.split.nonmembers
    for name, floor in (("multiloss", 0.9), ("noiseopt", 0.8), ("gradmask", 0.65)):
        a = get_attack(name)
        sm = a.score(overfit_ddpm.target, m.images, m.ids, progress=False).numpy()
        sn = a.score(overfit_ddpm.target, n.images, n.ids, progress=False).numpy()
        cal = [auc(sm[:32, j], sn[:32, j]) for j in range(sm.shape[1])]
        column = max(range(len(cal)), key=cal.__getitem__)
        value = auc(sm[32:, column], sn[32:, column])
        print(f"\n{name}: calibration AUCs {[round(c, 3) for c in cal]} -> {a.columns[column]}, evaluation AUC {value:.3f}")
        assert value >= floor, f"{name}[{a.columns[column]}] AUC {value:.3f}"
