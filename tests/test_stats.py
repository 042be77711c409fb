"""grpo_rank.analysis.stats on inputs whose answers are known by hand, plus invariants checked by hypothesis.

    python -m pytest tests/test_stats.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_rank.analysis import stats

positive_maps = st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=2, max_size=40)


def test_max_min_ratio_is_over_per_layer_means():
    assert stats.max_min_ratio([1.0, 2.0, 1.5, 1.0]) == 2.0
    assert stats.max_min_ratio([3.0, 3.0]) == 1.0
    assert stats.max_min_ratio([0.0, 1.0]) == math.inf
    assert math.isnan(stats.max_min_ratio([0.0, 0.0]))


@pytest.mark.parametrize("n, k", [(10, 3), (28, 8), (30, 9), (12, 4), (3, 1), (1, 1), (20, 6), (14, 4),
                                  (5, 2), (15, 5), (25, 8), (2, 1)])
def test_top_count_rounds_30_percent_halves_up(n, k):
    # 28 layers: 8.4 -> 8, the only k that gives the study's 35.7%; 1.5, 4.5, 7.5 round up (Python's round()
    # would give 2, 4, 8: half to even); 0.3 * 10 is a hair above 3 in floating point and stays 3
    assert stats.top_count(n, 0.3) == k


def test_the_studys_top30_share_needs_eight_of_28_layers():
    # the study: layers 9-18 carry 43.0% of 28 layers' gradient, and its top-30% share is 35.7%. The top 9
    # layers carry at least 9/10 of any 10 layers' 43.0%, i.e. >= 38.7%, so 35.7% cannot be a top-9
    # share; on a map of exactly that kind the top 8 (k = round(8.4)) carry 8 * 4.3% = 34.4%
    rng = np.random.default_rng(1)
    for _ in range(200):
        ten, rest = rng.dirichlet(np.ones(10)) * 0.43, rng.dirichlet(np.ones(18)) * 0.57
        assert stats.top_share(np.concatenate([rest[:8], ten, rest[8:]]), 9 / 28) >= 0.387 - 1e-12
    assert stats.top_count(28) == 8
    assert stats.top_share([0.043] * 10 + [0.57 / 18] * 18) == pytest.approx(8 * 0.043)


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
    v = np.round(rng.normal(size=9))  # ties
    np.testing.assert_array_equal(stats.weighted_ranks(v, np.ones((1, 9)))[0], rankdata(v))


def test_weighted_correlations_equal_those_of_the_pooled_vector():
    """Weights are multiplicities: the same numbers as building the vector with each value repeated."""
    from scipy.stats import pearsonr, rankdata, spearmanr

    rng = np.random.default_rng(8)
    x, y = np.round(rng.normal(size=12), 1), rng.normal(size=12)
    w = rng.integers(0, 4, size=(20, 12))
    pearson, spearman = stats.weighted_correlations(x, y, w)
    for i, row in enumerate(w):
        px, py = np.repeat(x, row), np.repeat(y, row)
        np.testing.assert_array_equal(stats.weighted_ranks(x, w[i:i + 1])[0][row > 0], rankdata(px)[np.cumsum(row)[row > 0] - 1])
        assert pearson[i] == pytest.approx(pearsonr(px, py).statistic, rel=1e-12, abs=1e-14)
        assert spearman[i] == pytest.approx(spearmanr(px, py).statistic, rel=1e-12, abs=1e-14)
    # what is present decides: zero weights drop a value; a constant or too short pooled vector is NaN
    p, s = stats.weighted_correlations([1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 1.0, 1.0], [[0, 1, 1, 1], [1, 1, 0, 0], [0, 2, 1, 1]])
    assert math.isnan(p[0]) and math.isnan(s[0]) and math.isnan(p[1]) and math.isnan(p[2])


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


def test_t_interval_cut_to_the_statistics_range():
    # 3 seeds of a correlation near 1: the plain t-interval leaves [-1, 1], the bounded one stops at 1
    r = [0.99, 0.97, 0.80]
    mean, lo, hi = stats.t_interval(r)
    assert hi > 1
    assert stats.t_interval(r, bounds=(-1, 1)) == (mean, lo, 1.0)
    # both ends: a wide interval around an accuracy near 0 is cut at 0, one inside its range is untouched
    assert stats.t_interval([0.0, 0.06, 0.0], bounds=(0, 1))[1] == 0.0
    assert stats.t_interval([0.5, 0.55], bounds=(0, 1)) == stats.t_interval([0.5, 0.55])


def test_statistic_bounds_by_name():
    from grpo_rank.analysis.report.gradstats import statistic_bounds

    for name in ("early_late_pearson", "rank_shift_spearman_full_weight", "pearson_with_combined"):
        assert statistic_bounds(name) == (-1.0, 1.0)
    for name in ("gini", "top30_share", "share_attention", "norm_share"):
        assert statistic_bounds(name) == (0.0, 1.0)
    for name in ("max_min_ratio", "cv", "amplification_max_min", "scaling_slope_init"):
        assert statistic_bounds(name) is None


@pytest.mark.parametrize("df, p, t", [(10, 0.975, 2.228), (26, 0.975, 2.056), (1, 0.975, 12.706), (2, 0.975, 4.303),
                                      (30, 0.95, 1.697), (5, 0.025, -2.571), (120, 0.995, 2.617)])
def test_t_quantile_table_values(df, p, t):
    # the printed t table to 3 decimals
    assert round(stats.t_quantile(p, df), 3) == t


def test_t_quantile_is_symmetric_and_exact():
    assert stats.t_quantile(0.5, 7) == 0.0
    assert stats.t_quantile(0.1, 9) == -stats.t_quantile(0.9, 9)
    # df = 1 is the Cauchy distribution, df = 2 has t = (2p - 1) sqrt(2 / (4 p (1 - p))): closed forms
    assert stats.t_quantile(0.9, 1) == pytest.approx(math.tan(math.pi * 0.4), rel=1e-14)
    assert stats.t_quantile(0.9, 2) == pytest.approx(0.8 * math.sqrt(2 / (4 * 0.9 * 0.1)), rel=1e-14)
    with pytest.raises(ValueError):
        stats.t_quantile(0.5, 2.5)


def test_t_quantile_equals_scipy():
    from scipy.special import stdtrit

    for df in [*range(1, 41), 60, 100, 500]:
        for p in (0.005, 0.025, 0.05, 0.3, 0.6, 0.9, 0.975, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(stdtrit(df, p), rel=1e-11), (df, p)


def test_ols_slope_by_hand():
    # x = 0..3, y = 1, 3, 2, 5: Sxy = 5.5, Sxx = 5, b = 1.1, a = 2.75 - 1.1 * 1.5 = 1.1; residuals -0.1, 0.8,
    # -1.3, 0.6, SSE = 2.7, se(b) = sqrt(2.7 / 2 / 5); t_{0.975, 2} = 4.302652729749464
    fit = stats.ols_slope([0, 1, 2, 3], [1, 3, 2, 5])
    half = 4.302652729749464 * math.sqrt(2.7 / 2 / 5)
    assert (fit["slope"], fit["intercept"], fit["n"]) == pytest.approx((1.1, 1.1, 4))
    assert (fit["low"], fit["high"]) == pytest.approx((1.1 - half, 1.1 + half), rel=1e-12)
    line = stats.ols_slope([1, 2, 4, 8], [-1, -3, -7, -15])  # y = 1 - 2x exactly: a point interval
    assert (line["slope"], line["low"], line["high"]) == pytest.approx((-2, -2, -2))
    assert math.isnan(stats.ols_slope([1, 2], [3, 4])["slope"])  # two points: no residual degrees of freedom
    assert math.isnan(stats.ols_slope([3, 3, 3], [1, 2, 3])["low"])  # constant x: no slope


def test_ols_slope_equals_scipy_linregress():
    from scipy.stats import linregress, t

    rng = np.random.default_rng(4)
    for n in (3, 5, 28, 100):
        x, y = rng.normal(size=n), rng.normal(size=n)
        fit, ref = stats.ols_slope(x, y, 0.9), linregress(x, y)
        half = t.ppf(0.95, n - 2) * ref.stderr
        assert (fit["slope"], fit["intercept"]) == pytest.approx((ref.slope, ref.intercept), rel=1e-12, abs=1e-14)
        assert (fit["low"], fit["high"]) == pytest.approx((ref.slope - half, ref.slope + half), rel=1e-10)


def test_log_ratio_slope_recovers_a_planted_power_law():
    ranks, ref_ranks = np.array([4, 8, 16, 32, 8, 12]), np.full(6, 8)
    base = np.random.default_rng(0).uniform(0.5, 2.0, (6, 3))  # per (layer, module), common to both runs
    for b in (-0.5, 0.0, 0.5):
        norms = base * ((ranks / ref_ranks) ** b)[:, None]
        fit = stats.log_ratio_slope(norms, base, ranks, ref_ranks)
        assert (fit["slope"], fit["low"], fit["high"]) == pytest.approx((b, b, b), abs=1e-12)
    # a module with a zero norm is left out of its layer; a layer with none left is left out
    norms = base * np.sqrt(ranks / ref_ranks)[:, None]
    norms[0, 1], norms[2] = 0.0, 0.0
    fit = stats.log_ratio_slope(norms, base, ranks, ref_ranks)
    assert fit["slope"] == pytest.approx(0.5) and fit["n"] == 5
    # 1-D: one value per layer
    assert stats.log_ratio_slope(ranks ** -0.5, ref_ranks ** -0.5, ranks, ref_ranks)["slope"] == pytest.approx(-0.5)


@pytest.mark.parametrize("p, points", [(0.745, 6.04), (0.70, 6.35), (0.675, 6.49), (0.65, 6.61), (0.66, 6.57)])
def test_normal_half_width_is_the_studys_plus_minus(p, points):
    # the study's "Wilson" +- values on n = 200 questions are these normal-approximation half-widths
    assert round(100 * stats.normal_half_width(p, 200), 2) == points
    assert stats.normal_half_width(p, 200) == pytest.approx(1.959963984540054 * math.sqrt(p * (1 - p) / 200))
    lo, hi = stats.wilson_interval(round(p * 200), 200)
    assert hi - lo < 2 * stats.normal_half_width(p, 200)  # Wilson's is narrower here, and not symmetric


def test_normal_half_width_without_questions_is_nan():
    assert math.isnan(stats.normal_half_width(0.5, 0))


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


def test_stats_imports_neither_torch_nor_scipy_nor_statsmodels():
    import subprocess
    import sys

    # scipy.stats and statsmodels take ~1 s to import, a third of the report's time budget
    code = ("import sys, grpo_rank.analysis.stats; "
            "print(sorted(m for m in ('torch', 'scipy', 'statsmodels') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
