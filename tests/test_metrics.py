"""Tests for genleak.metrics: against sklearn, against brute-force references, and on hand-made cases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from genleak import metrics
from genleak.errors import GenleakError
from genleak.metrics import (
    MetricReport,
    asr_calibrated,
    auc,
    balanced_accuracy_at,
    best_balanced_accuracy,
    bootstrap_ci,
    calibrate_threshold,
    evaluate,
    fpr_resolution_warning,
    repeated_subsets,
    roc_curve,
    tpr_at_fpr,
)

# ----------------------------------------------------------------------------------------------
# Slow, obviously-correct references
# ----------------------------------------------------------------------------------------------


def ref_points(m, n):
    """(fpr, tpr) for +inf and every distinct pooled score, by looping over thresholds."""
    m, n = np.asarray(m, float), np.asarray(n, float)
    pts = [(0.0, 0.0)]
    for t in sorted(set(np.concatenate([m, n]).tolist()), reverse=True):
        pts.append((float(np.mean(n >= t)), float(np.mean(m >= t))))
    return pts


def ref_tpr_at_fpr(m, n, alpha):
    return max(tpr for fpr, tpr in ref_points(m, n) if fpr <= alpha)


def ref_best_balanced_accuracy(m, n):
    return max(0.5 * (tpr + 1 - fpr) for fpr, tpr in ref_points(m, n))


def ref_auc_pairs(m, n):
    m, n = np.asarray(m, float)[:, None], np.asarray(n, float)[None, :]
    return float(np.mean((m > n) + 0.5 * (m == n)))


def int_scores(rng, n_m, n_n, high=12, shift=2):
    """Integer scores, so ties within and across sides are frequent."""
    return rng.integers(0, high, n_m) + shift, rng.integers(0, high, n_n)


# ----------------------------------------------------------------------------------------------
# AUC and ROC
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sizes", [(50, 50), (37, 120), (200, 9), (1, 5)])
def test_auc_matches_sklearn_with_ties(seed, sizes):
    rng = np.random.default_rng(seed)
    m, n = int_scores(rng, *sizes, shift=seed % 3)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    expected = roc_auc_score(y, np.r_[m, n])
    assert abs(auc(m, n) - expected) <= 1e-12
    assert abs(auc(m, n) - ref_auc_pairs(m, n)) <= 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_sklearn_continuous(seed):
    rng = np.random.default_rng(100 + seed)
    m, n = rng.normal(0.3, 1, 300), rng.normal(0, 1, 451)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert abs(auc(m, n) - roc_auc_score(y, np.r_[m, n])) <= 1e-12


def test_auc_extremes_and_no_flip():
    assert auc([2, 3], [0, 1]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0  # metrics never flip scores
    assert auc([1, 1, 1], [1, 1]) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_matches_sklearn_points(seed):
    rng = np.random.default_rng(seed)
    m, n = int_scores(rng, 40 + seed, 65 - seed)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, np.r_[m, n], drop_intermediate=False)
    r = roc_curve(m, n)
    np.testing.assert_allclose(r.fpr, sk_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.tpr, sk_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(r.thresholds[1:], sk_thr[1:])
    assert r.thresholds[0] == np.inf
    assert np.all(np.diff(r.thresholds) < 0)
    assert (r.fpr[0], r.tpr[0], r.fpr[-1], r.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    np.testing.assert_allclose(np.c_[r.fpr, r.tpr], np.array(ref_points(m, n)), rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# TPR@FPR
# ----------------------------------------------------------------------------------------------


def test_tpr_at_fpr_docstring_example():
    m, n = [3, 4, 5], [0, 1, 2, 3.5]
    assert tpr_at_fpr(m, n, 0.0) == pytest.approx(2 / 3)  # 4 and 5 above max non-member 3.5
    assert tpr_at_fpr(m, n, 0.01) == pytest.approx(2 / 3)  # 1% of 4 buys no false positive
    assert tpr_at_fpr(m, n, 0.25) == 1.0
    assert tpr_at_fpr(m, n, 0.2499) == pytest.approx(2 / 3)
    assert tpr_at_fpr(m, n, 1.0) == 1.0


def test_tpr_at_zero_fpr_is_strictly_above_max_nonmember():
    # A member tied with the top non-member does not count at FPR 0.
    assert tpr_at_fpr([5, 5, 6, 1], [5, 0], 0.0) == 0.25
    assert tpr_at_fpr([0, 1], [2, 3], 0.0) == 0.0


def test_tpr_at_fpr_float_budget_is_not_rounded_down():
    # 0.29 * 100 == 28.999999999999996 in floats: a naive floor would allow only 28 false positives.
    n = np.arange(100, dtype=float)  # non-member scores 0..99
    m = np.array([70.5])  # caught iff the threshold admits 29 non-members (71..99)
    assert tpr_at_fpr(m, n, 0.29) == 1.0
    assert tpr_at_fpr(m, n, 0.28) == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_tpr_at_fpr_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, n = int_scores(rng, 30 + 7 * seed, 50 - 3 * seed, high=15, shift=seed % 4)
    for alpha in (0.0, 0.01, 0.05, 0.1, 1 / 3, 0.5, 0.9, 1.0):
        assert tpr_at_fpr(m, n, alpha) == pytest.approx(ref_tpr_at_fpr(m, n, alpha), abs=1e-12), alpha


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x", None])
def test_tpr_at_fpr_rejects_bad_budget(bad):
    with pytest.raises(GenleakError, match="max_fpr"):
        tpr_at_fpr([1.0], [0.0], bad)


# ----------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------


def test_balanced_accuracy_at_counts_ties_as_member():
    m, n = [1, 2, 3, 4], [0, 2]
    # threshold 2: TPR 3/4 (2,3,4 >= 2), TNR 1/2 (only 0 < 2)
    assert balanced_accuracy_at(m, n, 2) == pytest.approx(0.5 * (0.75 + 0.5))
    assert balanced_accuracy_at(m, n, np.inf) == 0.5
    assert balanced_accuracy_at(m, n, -np.inf) == 0.5
    with pytest.raises(GenleakError):
        balanced_accuracy_at(m, n, float("nan"))


@pytest.mark.parametrize("seed", range(6))
def test_best_balanced_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, n = int_scores(rng, 25 + 11 * seed, 60, high=10, shift=seed % 3)
    assert best_balanced_accuracy(m, n) == pytest.approx(ref_best_balanced_accuracy(m, n), abs=1e-12)
    # The brute force over thresholds using balanced_accuracy_at gives the same maximum.
    grid = np.unique(np.r_[m, n, np.inf])
    assert best_balanced_accuracy(m, n) == pytest.approx(max(balanced_accuracy_at(m, n, t) for t in grid))


def test_best_balanced_accuracy_extremes():
    rng = np.random.default_rng(0)
    assert best_balanced_accuracy(rng.normal(10, 1, 50), rng.normal(0, 1, 70)) == 1.0
    assert best_balanced_accuracy([0.0, 1.0], [2.0, 3.0]) == 0.5  # anti-separated: never below chance
    same = best_balanced_accuracy(rng.normal(size=20000), rng.normal(size=20000))
    assert 0.5 <= same < 0.52


def test_calibrate_threshold_midpoint_and_no_signal():
    # Best rule on calibration: members {4, 5} vs non-members {1, 2}; gap (2, 4] -> midpoint 3.
    assert calibrate_threshold([4, 5], [1, 2]) == 3.0
    assert calibrate_threshold([0, 1], [2, 3]) == np.inf
    assert asr_calibrated([0, 1], [2, 3], [10, 11], [0, 1]) == 0.5


def test_calibrated_threshold_uses_only_calibration_data():
    rng = np.random.default_rng(1)
    cal_m, cal_n = rng.normal(1, 1, 400), rng.normal(0, 1, 400)
    t = calibrate_threshold(cal_m, cal_n)
    ev1 = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    ev2 = rng.normal(5, 1, 300), rng.normal(-5, 1, 300)
    assert asr_calibrated(cal_m, cal_n, *ev1) == balanced_accuracy_at(*ev1, t)
    assert asr_calibrated(cal_m, cal_n, *ev2) == balanced_accuracy_at(*ev2, t)
    # The calibrated threshold maximises calibration accuracy.
    assert balanced_accuracy_at(cal_m, cal_n, t) == pytest.approx(best_balanced_accuracy(cal_m, cal_n))


@pytest.mark.parametrize("seed", range(5))
def test_calibrated_asr_is_at_most_oracle_asr_on_iid_data(seed):
    rng = np.random.default_rng(seed)
    cal = rng.normal(0.5, 1, 500), rng.normal(0, 1, 500)
    ev = rng.normal(0.5, 1, 500), rng.normal(0, 1, 500)
    honest = asr_calibrated(*cal, *ev)
    oracle = best_balanced_accuracy(*ev)
    assert honest <= oracle
    assert honest > 0.55  # but it still finds the signal (true optimum ~0.599)


def test_calibrated_asr_strictly_below_oracle_with_no_signal():
    rng = np.random.default_rng(3)
    cal = rng.normal(size=200), rng.normal(size=200)
    ev = rng.normal(size=200), rng.normal(size=200)
    assert asr_calibrated(*cal, *ev) < best_balanced_accuracy(*ev)


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


def _slow_bootstrap(m, n, metric_fn, n_resamples, seed):
    """Loop version with the documented draws: all index matrices at once, one generator per side."""
    ss_m, ss_n = np.random.SeedSequence(seed).spawn(2)
    idx_m = np.random.default_rng(ss_m).integers(0, m.size, size=(n_resamples, m.size))
    idx_n = np.random.default_rng(ss_n).integers(0, n.size, size=(n_resamples, n.size))
    vals = np.array([metric_fn(m[idx_m[b]], n[idx_n[b]]) for b in range(n_resamples)])
    tail = (1 - 0.95) / 2
    lo, hi = np.quantile(vals, [tail, 1 - tail])
    return float(lo), float(hi)


@pytest.mark.parametrize(
    ("metric", "max_fpr", "fn"),
    [
        ("auc", None, auc),
        ("asr", None, best_balanced_accuracy),
        ("tpr_at_fpr", 0.1, lambda a, b: tpr_at_fpr(a, b, 0.1)),
        ("tpr_at_fpr", 0.0, lambda a, b: tpr_at_fpr(a, b, 0.0)),
    ],
)
def test_bootstrap_vectorised_equals_loop(metric, max_fpr, fn, monkeypatch):
    rng = np.random.default_rng(7)
    m, n = int_scores(rng, 23, 31, high=9)
    m, n = m.astype(float), n.astype(float)
    expected = _slow_bootstrap(m, n, fn, 60, seed=5)
    got = bootstrap_ci(m, n, metric=metric, n_resamples=60, seed=5, max_fpr=max_fpr)
    assert got == pytest.approx(expected, abs=1e-12)
    # Chunking for memory must not change the draws: force chunks of one resample.
    monkeypatch.setattr(metrics, "_CHUNK_BYTES", 1)
    assert bootstrap_ci(m, n, metric=metric, n_resamples=60, seed=5, max_fpr=max_fpr) == got


def test_bootstrap_contains_estimate_shrinks_and_is_reproducible():
    rng = np.random.default_rng(11)
    small = rng.normal(0.5, 1, 100), rng.normal(0, 1, 100)
    large = rng.normal(0.5, 1, 2000), rng.normal(0, 1, 2000)
    lo_s, hi_s = bootstrap_ci(*small, n_resamples=400, seed=1)
    lo_l, hi_l = bootstrap_ci(*large, n_resamples=400, seed=1)
    assert lo_s <= auc(*small) <= hi_s
    assert lo_l <= auc(*large) <= hi_l
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)  # width ~ 1/sqrt(n): expect ~0.22x
    assert bootstrap_ci(*small, n_resamples=400, seed=1) == (lo_s, hi_s)
    assert bootstrap_ci(*small, n_resamples=400, seed=2) != (lo_s, hi_s)
    lo, hi = bootstrap_ci(*large, metric="tpr_at_fpr", max_fpr=0.05, n_resamples=300)
    assert lo <= tpr_at_fpr(*large, 0.05) <= hi
    lo, hi = bootstrap_ci(*large, metric="asr", n_resamples=300)
    assert lo <= best_balanced_accuracy(*large) <= hi
    lo, hi = bootstrap_ci(*small, confidence=0.5, n_resamples=400, seed=1)
    assert lo_s <= lo <= hi <= hi_s


def test_bootstrap_argument_errors():
    m, n = [1.0, 2.0], [0.0, 1.0]
    with pytest.raises(GenleakError, match="max_fpr"):
        bootstrap_ci(m, n, metric="tpr_at_fpr")
    with pytest.raises(GenleakError, match="max_fpr"):
        bootstrap_ci(m, n, metric="auc", max_fpr=0.01)
    with pytest.raises(GenleakError, match="unknown metric"):
        bootstrap_ci(m, n, metric="accuracy")
    with pytest.raises(GenleakError, match="confidence"):
        bootstrap_ci(m, n, confidence=95)
    with pytest.raises(GenleakError, match="n_resamples"):
        bootstrap_ci(m, n, n_resamples=1)


# ----------------------------------------------------------------------------------------------
# Repeated subsets
# ----------------------------------------------------------------------------------------------


def test_repeated_subsets_statistics():
    rng = np.random.default_rng(2)
    m, n = rng.normal(0.5, 1, 1500), rng.normal(0, 1, 1200)
    res = repeated_subsets(m, n, n_subsets=50, subset_size=300, seed=3)
    assert set(res) == {"auc", "tpr@1%fpr", "asr"}
    # the subset means sit at the full-data figures (0.621 / 0.037 / 0.589; measured 0.615 / 0.037 / 0.592),
    # the AUC spread at its 300 + 300 standard error (~0.023; measured 0.021) and the TPR spread near
    # its binomial one (~0.011; measured 0.015): a wrong std (e.g. of the mean, or zero) fails
    full = metrics.evaluate(m, n)
    assert res["auc"][0] == pytest.approx(full.auc, abs=0.02)
    assert res["tpr@1%fpr"][0] == pytest.approx(full.tpr_at_1pct_fpr, abs=0.01)
    assert res["asr"][0] == pytest.approx(full.asr, abs=0.02)
    assert 0.015 < res["auc"][1] < 0.035 and 0.007 < res["tpr@1%fpr"][1] < 0.03 and 0.008 < res["asr"][1] < 0.03
    assert res == repeated_subsets(m, n, n_subsets=50, subset_size=300, seed=3)
    res2 = repeated_subsets(m, n, n_subsets=20, subset_size=200, fprs=(0.001, 0.05, 0.0))
    assert set(res2) == {"auc", "tpr@0.1%fpr", "tpr@5%fpr", "tpr@0%fpr", "asr"}


def test_repeated_subsets_full_size_has_zero_spread_and_matches_point_metrics():
    # Subsets of the whole data are the data itself (no replacement): every subset agrees.
    rng = np.random.default_rng(4)
    m, n = int_scores(rng, 80, 80)
    res = repeated_subsets(m, n, n_subsets=5, subset_size=80, fprs=(0.05,))
    assert res["auc"] == pytest.approx((auc(m, n), 0.0), abs=1e-12)
    assert res["tpr@5%fpr"] == pytest.approx((tpr_at_fpr(m, n, 0.05), 0.0), abs=1e-12)
    assert res["asr"] == pytest.approx((best_balanced_accuracy(m, n), 0.0), abs=1e-12)


def test_repeated_subsets_subsets_are_without_replacement(monkeypatch):
    # Record the position matrices handed to the metric kernel and check rows have no repeats.
    seen = []
    original = metrics._stats_from_positions

    def spy(pos_m, pos_n, n_thr, wanted):
        seen.append(pos_m)
        return original(pos_m, pos_n, n_thr, wanted)

    monkeypatch.setattr(metrics, "_stats_from_positions", spy)
    m = np.arange(40, dtype=float)  # distinct scores -> distinct positions
    repeated_subsets(m, np.arange(40, dtype=float) - 0.5, n_subsets=10, subset_size=25)
    rows = np.concatenate(seen)
    assert rows.shape == (10, 25)
    assert all(len(set(r.tolist())) == 25 for r in rows)


def test_repeated_subsets_too_small():
    with pytest.raises(GenleakError, match=r"have 100 members and 40 non-members"):
        repeated_subsets(np.zeros(100), np.zeros(40), subset_size=50)
    with pytest.raises(GenleakError, match="n_subsets"):
        repeated_subsets(np.zeros(10), np.zeros(10), n_subsets=1, subset_size=5)


# ----------------------------------------------------------------------------------------------
# Report and resolution warning
# ----------------------------------------------------------------------------------------------


def test_evaluate_consistent_with_functions():
    rng = np.random.default_rng(9)
    m, n = rng.normal(1, 1, 400), rng.normal(0, 1, 1500)
    r = evaluate(m, n)
    assert isinstance(r, MetricReport)
    assert r.auc == auc(m, n)
    assert r.tpr_at_1pct_fpr == tpr_at_fpr(m, n, 0.01)
    assert r.tpr_at_01pct_fpr == tpr_at_fpr(m, n, 0.001)
    assert r.tpr_at_0_fpr == tpr_at_fpr(m, n, 0.0)
    assert r.asr == best_balanced_accuracy(m, n)
    assert (r.n_members, r.n_nonmembers) == (400, 1500)
    assert r.auc_ci is None and r.tpr_at_1pct_fpr_ci is None

    rb = evaluate(m, n, bootstrap=200, seed=4)
    assert rb.auc_ci == bootstrap_ci(m, n, n_resamples=200, seed=4)
    assert rb.tpr_at_1pct_fpr_ci == bootstrap_ci(
        m, n, metric="tpr_at_fpr", max_fpr=0.01, n_resamples=200, seed=4
    )
    d = rb.to_dict()
    assert list(d) == [
        "auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "tpr_at_0_fpr", "asr",
        "n_members", "n_nonmembers", "auc_ci", "tpr_at_1pct_fpr_ci", "leakage_auc", "leak_direction",
        "leakage_auc_ci", "flipped_tpr_at_1pct_fpr", "flipped_tpr_at_01pct_fpr", "flipped_tpr_at_1pct_fpr_ci",
    ]  # fmt: skip
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["auc_ci"], list) and type(d["n_members"]) is int
    assert r.to_dict()["auc_ci"] is None


def test_fpr_resolution_warning():
    msg = fpr_resolution_warning(200, 0.001)
    assert msg == "TPR@0.1%FPR needs >= 1000 non-members; have 200: the figure is TPR at FPR=0"
    assert fpr_resolution_warning(1000, 0.001) is None
    assert fpr_resolution_warning(99, 0.01) is not None
    assert fpr_resolution_warning(100, 0.01) is None
    assert fpr_resolution_warning(5, 0.0) is None  # TPR@0%FPR is meant literally
    assert "needs >= 4 non-members" in fpr_resolution_warning(3, 0.25)
    # The warning agrees with tpr_at_fpr: below the resolution, TPR@alpha == TPR@0.
    m, n = np.arange(10) + 0.5, np.arange(99)
    assert tpr_at_fpr(m, n, 0.01) == tpr_at_fpr(m, n, 0.0)
    with pytest.raises(GenleakError):
        fpr_resolution_warning(-1, 0.01)


# ----------------------------------------------------------------------------------------------
# Validation and input types
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "nonmembers", "pattern"),
    [
        ([1.0, np.nan, np.nan, np.nan], [0.0], r"^member scores contain 3 NaN values"),
        ([1.0], [0.0, np.nan], r"^non-member scores contain 1 NaN value;"),
        ([1.0, np.inf], [0.0], r"^member scores contain 1 infinite value"),
        ([1.0], [-np.inf], r"^non-member scores contain 1 infinite value"),
        ([], [0.0], r"^member scores are empty"),
        ([1.0], np.array([]), r"^non-member scores are empty"),
        (np.ones((3, 2)), [0.0], r"^member scores must be 1-D.*\(3, 2\)"),
        ([1.0], np.ones((4, 1)), r"^non-member scores must be 1-D.*\(4, 1\)"),
        (np.float64(1.0), [0.0], r"^member scores must be 1-D"),
        (["a", "b"], [0.0], r"^member scores must be real numbers"),
    ],
)
def test_validation_names_the_side(members, nonmembers, pattern):
    for fn in (auc, roc_curve, best_balanced_accuracy, evaluate):
        with pytest.raises(GenleakError, match=pattern):
            fn(members, nonmembers)
    with pytest.raises(GenleakError, match=pattern):
        tpr_at_fpr(members, nonmembers, 0.01)
    with pytest.raises(GenleakError, match=pattern):
        bootstrap_ci(members, nonmembers)


def test_validation_names_calibration_and_evaluation_sides():
    good = [1.0, 2.0]
    with pytest.raises(GenleakError, match=r"^calibration member scores contain 1 NaN"):
        asr_calibrated([np.nan], good, good, good)
    with pytest.raises(GenleakError, match=r"^evaluation non-member scores are empty"):
        asr_calibrated(good, good, good, [])


def test_accepts_lists_ints_and_torch_tensors():
    torch = pytest.importorskip("torch")
    m = torch.tensor([3.0, 4.0, 5.0], requires_grad=True)
    n = torch.tensor([0.0, 1.0, 2.0, 3.5], dtype=torch.float64)
    assert auc(m, n) == auc([3, 4, 5], np.array([0, 1, 2, 3.5])) == 11 / 12
    assert tpr_at_fpr(m.to(torch.bfloat16), n, 0.0) == pytest.approx(2 / 3)


def test_import_does_not_import_torch():
    code = "import sys, genleak.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
