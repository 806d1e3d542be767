"""The one scoring path (``genleak.scoring``): the same numbers as ``Attack.score``, a content-keyed
cache that a second call and a killed run reuse, and the data's conditions (captions) passed on.

Tiny random (untrained) targets: the scores are real, deterministic numbers, which is all these
identities need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genleak.attacks import get_attack
from genleak.data import make_split
from genleak.scoring import score_images, score_split


class RecordingTarget:
    """Delegates to a real target, counts denoiser calls, records the conditions it is given, and can
    crash after ``fail_after`` calls (a run killed mid-way)."""

    def __init__(self, target, fail_after: int | None = None) -> None:
        self._target = target
        self.calls = 0
        self.conds: list = []
        self.fail_after = fail_after

    def eps(self, x_t, t, cond=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.conds.append(cond)
        return self._target.eps(x_t, t, cond)

    def __getattr__(self, name):
        return getattr(self._target, name)


@pytest.fixture(scope="module")
def split(digits8):
    return make_split(digits8, 12, 12, seed=0)


def test_scores_are_attack_score_and_a_second_call_computes_nothing(pixel, split, tmp_path):
    attacks = [get_attack("loss"), get_attack("multiloss", timesteps=(50,))]  # (N,) and (N, 1) scores
    counting = RecordingTarget(pixel)
    first = score_split(counting, split, attacks, cache=tmp_path, batch_size=8, progress=False)
    for a in attacks:
        for side, images in (("members", split.members), ("nonmembers", split.nonmembers)):
            want = a.score(pixel, images.images, images.ids, batch_size=8, progress=False).numpy()
            got = getattr(first[a], side)
            assert got.values.shape == want.shape and got.values.dtype == want.dtype
            np.testing.assert_array_equal(got.values, want)
            assert (got.computed, got.reused) == (12, 0)
    assert counting.calls > 0
    counting.calls = 0
    again = score_split(counting, split, attacks, cache=tmp_path, batch_size=8, progress=False)
    assert counting.calls == 0
    for a in attacks:
        assert (again[a].members.computed, again[a].members.reused) == (0, 12)
        np.testing.assert_array_equal(again[a].members.values, first[a].members.values)
        assert again[a].members.values.shape == first[a].members.values.shape  # (N, 1) stays (N, 1) from the cache
    # another split that holds some of the same samples reuses them; a new seed is another entry
    part = score_images(counting, split.members[:5], attacks[:1], cache=tmp_path, batch_size=8, progress=False)
    assert counting.calls == 0 and part[attacks[0]].reused == 5
    np.testing.assert_array_equal(part[attacks[0]].values, first[attacks[0]].members.values[:5])
    other = score_images(counting, split.members[:5], attacks[:1], cache=tmp_path, seed=1, batch_size=8, progress=False)
    assert counting.calls > 0 and other[attacks[0]].computed == 5
    assert not np.allclose(other[attacks[0]].values, part[attacks[0]].values)


def test_a_killed_run_resumes_with_only_the_missing_chunks(pixel, split, tmp_path):
    loss = get_attack("loss")  # 5 denoiser calls per batch (one per noise draw)
    images = split.nonmembers
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_images(RecordingTarget(pixel, fail_after=2 * 5), images, [loss], cache=tmp_path, batch_size=4,
                     chunk_size=4, progress=False)
    counting = RecordingTarget(pixel)
    resumed = score_images(counting, images, [loss], cache=tmp_path, batch_size=4, chunk_size=4, progress=False)[loss]
    assert (resumed.computed, resumed.reused) == (4, 8) and counting.calls == 5
    want = loss.score(pixel, images.images, images.ids, batch_size=4, progress=False).numpy()
    np.testing.assert_array_equal(resumed.values, want)


def test_run_attacks_writes_a_resumable_cache_and_keeps_its_numbers(pixel, split, tmp_path):
    from genleak.pipeline import SCORE_CACHE_DIR, run_attacks

    first = run_attacks(pixel, split, ["loss"], tmp_path / "a", batch_size=8, progress=False)
    assert (tmp_path / "a" / SCORE_CACHE_DIR).is_dir()
    (tmp_path / "a" / "scores" / "loss.npz").unlink()  # the result file lost: rescored from the cache
    counting = RecordingTarget(pixel)
    again = run_attacks(counting, split, ["loss"], tmp_path / "a", batch_size=8, progress=False)
    assert counting.calls == 0 and again.metric("loss") == first.metric("loss")
    np.testing.assert_array_equal(again.attacks[0].member_scores, first.attacks[0].member_scores)


def test_text_to_image_targets_get_the_captions(digits8):
    from genleak.pipeline import run_attacks, sweep_parameter
    from genleak.targets.latent import (
        DEFAULT_CAPTION_TEMPLATE,
        LatentDiffusionTarget,
        build_latent_unet,
        build_vae,
        caption_vocabulary,
        sd_scheduler,
        template_captions,
    )
    from genleak.train.latent import build_text_stack

    torch.manual_seed(0)
    te, tok = build_text_stack(caption_vocabulary())
    t2i = LatentDiffusionTarget(build_vae(8, 1, (16, 32), 4), build_latent_unet(4, 4, (32, 64), 1, cross_attention_dim=32),
                                sd_scheduler(), te, tok, caption_template=DEFAULT_CAPTION_TEMPLATE, device="cpu")
    s = make_split(digits8, 6, 6, seed=0)
    for side in (s.members, s.nonmembers):
        side.captions = [f"{c} number {i}" for i, c in enumerate(template_captions(side))]  # one caption per image
    recording = RecordingTarget(t2i)
    sima = get_attack("sima", t=20)
    got = score_split(recording, s, [sima], progress=False)[sima]
    assert [list(c) for c in recording.conds] == [s.members.captions, s.nonmembers.captions]
    np.testing.assert_array_equal(got.members.values, sima.score(t2i, s.members.images, s.members.ids,
                                                                 cond=s.members.captions, progress=False).numpy())
    uncaptioned = sima.score(t2i, s.members.images, s.members.ids, cond=[""] * 6, progress=False).numpy()
    assert not np.allclose(got.members.values, uncaptioned)  # the captions matter to this target
    # `genleak sweep` scores with the captions too: the same AUC as `genleak attack` at each value
    recording.conds.clear()
    swept = sweep_parameter(recording, s, "sima", "t", [20, 100])
    assert all(list(c) in (s.members.captions, s.nonmembers.captions) for c in recording.conds)
    for t, row in swept.items():
        assert row["auc"] == run_attacks(t2i, s, ["sima"], attack_params={"sima": {"t": t}}, progress=False).metric("sima")
