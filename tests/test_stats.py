"""grpo_rank.stats on inputs whose answers are known by hand, plus invariants checked by hypothesis.

    python -m pytest tests/test_stats.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_rank import stats

positive_maps = st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=2, max_size=40)


def test_max_min_ratio_is_over_per_layer_means():
    assert stats.max_min_ratio([1.0, 2.0, 1.5, 1.0]) == 2.0
    assert stats.max_min_ratio([3.0, 3.0]) == 1.0
    assert stats.max_min_ratio([0.0, 1.0]) == math.inf
    assert math.isnan(stats.max_min_ratio([0.0, 0.0]))


@pytest.mark.parametrize("n, k", [(10, 3), (28, 9), (30, 9), (12, 4), (3, 1), (1, 1), (20, 6)])
def test_top_count_is_ceil_of_30_percent(n, k):
    # 0.3 * 10 and 0.3 * 20 are a hair above 3 and 6 in floating point; a bare ceil would give 4 and 7
    assert stats.top_count(n, 0.3) == k


def test_top_share_sorts_layers_by_importance():
    values = [2, 1, 1, 1, 1, 1, 1.5, 1, 2, 2]  # unsorted on purpose: the top 3 are the three 2s
    assert stats.top_share(values, 0.3) == pytest.approx(6 / 13.5)
    assert stats.top_share([5.0] * 10, 0.3) == pytest.approx(0.3)
    assert stats.top_share([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.3) == 1.0


def test_gini_known_values():
    assert stats.gini([1, 1, 1, 1]) == 0.0
    assert stats.gini([0, 0, 0, 1]) == pytest.approx(3 / 4)  # (L - 1) / L
    # [1, 3]: |1-3| * 2 / (2 * 4 * 2) = 0.25
    assert stats.gini([1, 3]) == pytest.approx(0.25)


@settings(max_examples=60, deadline=None)
@given(positive_maps, st.floats(0.1, 10.0))
def test_gini_equals_the_double_sum_and_is_scale_free(values, scale):
    x = np.array(values)
    double_sum = np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size ** 2 * x.mean())
    assert stats.gini(x) == pytest.approx(double_sum, abs=1e-9)
    assert stats.gini(x * scale) == pytest.approx(stats.gini(x), abs=1e-9)
    assert 0 <= stats.gini(x) <= (x.size - 1) / x.size + 1e-12


@settings(max_examples=60, deadline=None)
@given(positive_maps)
def test_concentration_is_the_same_on_shares_and_raw_values(values):
    raw = stats.concentration(values)
    shared = stats.concentration(stats.shares(values))
    for key in raw:
        assert shared[key] == pytest.approx(raw[key], rel=1e-9)
    assert raw["max_min_ratio"] >= 1
    k = stats.top_count(len(values))
    assert k / len(values) - 1e-9 <= raw["top30_share"] <= 1 + 1e-12  # the top k carry at least k / L


def test_cv_is_population_std_over_mean():
    assert stats.cv([1, 2, 3]) == pytest.approx(np.std([1, 2, 3]) / 2)


def test_correlation_exactly_linear_is_one():
    ranks = [4, 4, 8, 8, 12, 16]
    shift = [0.5 * r - 3 for r in ranks]
    c = stats.correlation(ranks, shift)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    c = stats.correlation(ranks, [-v for v in shift])
    assert c["pearson"] == pytest.approx(-1.0) and c["spearman"] == pytest.approx(-1.0)
    # monotone but not linear: Spearman 1, Pearson below 1
    c = stats.correlation([1, 2, 3, 4], [1, 10, 100, 1000])
    assert c["spearman"] == pytest.approx(1.0) and c["pearson"] < 0.99


def test_correlations_equal_scipy_with_and_without_ties():
    from scipy.stats import pearsonr, rankdata, spearmanr

    rng = np.random.default_rng(5)
    for i in range(200):
        n = int(rng.integers(3, 40))
        x = rng.normal(size=n)
        y = x * rng.normal() + rng.normal(size=n)
        if i % 2:
            x, y = np.round(x), np.round(2 * y)  # ties
        got = stats.correlation(x, y)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])
            continue
        assert got["pearson"] == pytest.approx(pearsonr(x, y).statistic, rel=1e-12, abs=1e-14)
        assert got["spearman"] == pytest.approx(spearmanr(x, y).statistic, rel=1e-12, abs=1e-14)
    m = np.round(rng.normal(size=(6, 9)))
    np.testing.assert_array_equal(stats.average_ranks(m), rankdata(m, axis=-1))


def test_correlation_undefined_is_nan():
    assert math.isnan(stats.correlation([8, 8, 8], [1, 2, 3])["pearson"])
    assert math.isnan(stats.correlation([1, 2], [1, 2])["spearman"])


def test_early_late_stability_windows():
    # 8 steps: windows of ceil(0.25 * 8) = 2 steps; the late map is the early map reversed
    early = np.array([1.0, 2.0, 3.0])
    mat = np.vstack([early, early, [5, 5, 5], [5, 5, 5], [5, 5, 5], [5, 5, 5], early[::-1], early[::-1]])
    res = stats.early_late_stability(mat, 0.25, 0.25)
    assert (res["n_early"], res["n_late"], res["overlap"]) == (2.0, 2.0, 0.0)
    assert res["pearson"] == pytest.approx(-1.0)
    assert res["spearman"] == pytest.approx(-1.0)
    assert stats.early_late_stability(mat, 0.5, 0.5)["pearson"] == pytest.approx(-1.0)
    # only the first step vs only the last
    assert stats.window_sizes(8, 0.1, 0.1) == (1, 1)
    # fractions are configurable: 3 of 10 and 5 of 10
    assert stats.window_sizes(10, 0.3, 0.5) == (3, 5)
    assert stats.early_late_stability(np.ones((1, 3)) * [1, 2, 3])["overlap"] == 1.0


def test_t_interval_by_hand():
    mean, lo, hi = stats.t_interval([0.5, 0.55])
    half = 12.706204736174698 * (np.std([0.5, 0.55], ddof=1) / math.sqrt(2))
    assert mean == pytest.approx(0.525)
    assert (lo, hi) == pytest.approx((0.525 - half, 0.525 + half))
    assert math.isnan(stats.t_interval([0.4])[1])
    assert stats.t_interval([0.4, 0.4]) == (0.4, 0.4, 0.4)


def test_wilson_interval_by_hand():
    k, n, z = 20, 40, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert stats.wilson_interval(k, n) == pytest.approx((centre - half, centre + half))
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


@pytest.mark.parametrize("k, n, confidence", [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.95), (137, 200, 0.9),
                                              (1, 1319, 0.99)])
def test_wilson_interval_equals_statsmodels(k, n, confidence):
    proportion_confint = pytest.importorskip("statsmodels.stats.proportion").proportion_confint
    expected = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    assert stats.wilson_interval(k, n, confidence) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_t_interval_equals_scipy():
    from scipy.stats import sem, t

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 30):
        x = rng.normal(0.5, 0.1, n)
        mean, lo, hi = stats.t_interval(x, 0.95)
        assert (lo, hi) == pytest.approx(t.interval(0.95, df=n - 1, loc=x.mean(), scale=sem(x)), rel=1e-12)


@pytest.mark.parametrize("b, c", [(1, 7), (0, 10), (3, 3), (5, 13), (2, 0), (300, 350), (40, 2)])
def test_mcnemar_exact_matches_scipys_binomial_test(b, c):
    from scipy.stats import binomtest

    ref = [True] * b + [False] * c + [True] * 5 + [False] * 4
    oth = [False] * b + [True] * c + [True] * 5 + [False] * 4
    res = stats.mcnemar_exact(ref, oth)
    assert (res["b"], res["c"]) == (b, c)
    # under H0 b ~ Binomial(b + c, 1/2); scipy's two-sided binomial test of it is the exact McNemar test
    assert res["pvalue"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_known_values():
    # b = 1, c = 7: P(X <= 1) = (C(8,0) + C(8,1)) / 2^8 = 9 / 256, two-sided 18 / 256
    assert stats.mcnemar_counts(1, 7)["pvalue"] == 18 / 256
    assert stats.mcnemar_counts(7, 1)["pvalue"] == 18 / 256
    assert stats.mcnemar_counts(0, 10)["pvalue"] == 2 / 1024
    assert stats.mcnemar_counts(4, 4)["pvalue"] == 1.0  # 2 P(X <= 4) > 1 is capped
    assert stats.mcnemar_counts(0, 0)["pvalue"] == 1.0


def test_paired_bootstrap_diff():
    ref = np.array([1] * 20 + [0] * 20)
    oth = ref.copy()
    oth[0] = 0
    oth[20:27] = 1
    res = stats.paired_bootstrap_diff(ref, oth)
    assert res["diff"] == pytest.approx(6 / 40)
    assert res["low"] < 6 / 40 < res["high"]
    assert res == stats.paired_bootstrap_diff(ref, oth)  # seeded: reruns agree
    same = stats.paired_bootstrap_diff(ref, ref)
    assert (same["diff"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    # 2-D: two seed pairs on the same questions; the difference averages over the pairs
    two = stats.paired_bootstrap_diff(np.vstack([ref, ref]), np.vstack([oth, ref]))
    assert two["diff"] == pytest.approx(3 / 40)


@pytest.mark.parametrize("n_resamples, confidence", [(10_000, 0.95), (2_500, 0.9)])
def test_paired_bootstrap_draws_the_resamples_of_scipy_bootstrap(n_resamples, confidence):
    from scipy.stats import bootstrap

    rng = np.random.default_rng(9)
    ref, oth = rng.random((3, 57)) < 0.5, rng.random((3, 57)) < 0.6
    got = stats.paired_bootstrap_diff(ref, oth, n_resamples=n_resamples, confidence=confidence, seed=4)
    d = (oth.astype(float) - ref).mean(axis=0)
    res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    rng=np.random.default_rng(4))
    assert (got["low"], got["high"]) == pytest.approx(
        (res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)


def test_seed_bootstrap_correlation():
    ranks = [np.array([4, 8, 12, 16.0]), np.array([16, 4, 8, 12.0])]
    linear = [0.01 * r - 0.1 for r in ranks]
    res = stats.seed_bootstrap_correlation(ranks, linear)
    assert res["pearson"] == pytest.approx(1.0) and res["pearson_low"] == pytest.approx(1.0)
    assert res["spearman_high"] == pytest.approx(1.0) and res["n_seeds"] == 2
    one = stats.seed_bootstrap_correlation(ranks[:1], linear[:1])
    assert one["pearson"] == pytest.approx(1.0) and math.isnan(one["pearson_low"])
    # two seeds that disagree (r = 1 and r = -1): the 4 equally likely resamples are {0,0} -> 1, {1,1} -> -1
    # and twice {0,1} -> the pooled r; the interval is their 2.5th and 97.5th percentiles
    noisy = [linear[0], -linear[1]]
    res = stats.seed_bootstrap_correlation(ranks, noisy)
    pooled = stats.pooled_correlation(ranks, noisy)["pearson"]
    assert res["pearson"] == pytest.approx(pooled)
    expected = np.quantile([1.0, pooled, pooled, -1.0], [0.025, 0.975])
    assert (res["pearson_low"], res["pearson_high"]) == pytest.approx(tuple(expected))
    # more seeds than the exact limit: random draws, seeded
    rng = np.random.default_rng(3)
    xs = [rng.random(6) for _ in range(stats.EXACT_BOOTSTRAP_SEEDS + 2)]
    ys = [x + 0.1 * rng.random(6) for x in xs]
    a = stats.seed_bootstrap_correlation(xs, ys, n_resamples=300)
    assert a == stats.seed_bootstrap_correlation(xs, ys, n_resamples=300)
    assert a["pearson_low"] <= a["pearson"] <= a["pearson_high"]


def test_seed_bootstrap_equals_resampling_one_draw_at_a_time():
    """The vectorised resampling against its definition: each draw's pooled correlation by scipy."""
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(11)
    xs = [rng.random(8) for _ in range(6)]
    ys = [x + 0.5 * rng.random(8) for x in xs]
    got = stats.seed_bootstrap_correlation(xs, ys, n_resamples=500, seed=2)
    draws = np.random.default_rng(2).integers(0, 6, size=(500, 6))
    pooled = [(np.concatenate([xs[i] for i in d]), np.concatenate([ys[i] for i in d])) for d in draws]
    for key, f in (("pearson", pearsonr), ("spearman", spearmanr)):
        dist = [f(x, y).statistic for x, y in pooled]
        assert (got[f"{key}_low"], got[f"{key}_high"]) == pytest.approx(tuple(np.quantile(dist, [0.025, 0.975])),
                                                                         rel=1e-12)


def test_shares_of_a_zero_map_are_nan():
    np.testing.assert_array_equal(stats.shares([1.0, 3.0]), [0.25, 0.75])
    rows = stats.shares(np.array([[0.0, 0.0], [2.0, 2.0]]))
    assert np.isnan(rows[0]).all() and rows[1].tolist() == [0.5, 0.5]


def test_group_shares():
    totals = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 1, "gate_proj": 2, "up_proj": 2, "down_proj": 2}
    res = stats.group_shares(totals, {"attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
                                      "ffn": ("gate_proj", "up_proj", "down_proj"), "q": ("q_proj",)})
    assert res == pytest.approx({"attention": 0.4, "ffn": 0.6, "q": 0.1})


def test_stats_imports_neither_torch_nor_scipy_stats_nor_statsmodels():
    import subprocess
    import sys

    # scipy.stats and statsmodels take ~1 s to import, a third of the report's budget (issue 12)
    code = ("import sys, grpo_rank.stats; "
            "print(sorted(m for m in ('torch', 'scipy.stats', 'statsmodels') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
