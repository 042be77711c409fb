"""The statistics of the cross-run report, as pure functions of arrays (numpy only; no torch, no scipy).

Every function takes plain numbers and returns plain numbers, so each one is tested on inputs whose
answer is known by hand (tests/test_stats.py). `grpo_rank.report` applies them to the job folders:

    >>> from grpo_rank.analysis.stats import max_min_ratio, top_share, gini
    >>> max_min_ratio([1.0, 2.0, 1.5])
    2.0
    >>> round(top_share([1, 1, 1, 1, 1, 1, 1, 1, 1, 11], 0.3), 3)  # top round(0.3 * 10) = 3 layers
    0.65
    >>> gini([1.0, 1.0, 1.0])
    0.0

Conventions shared by all functions:
- An importance map is one value per layer, S(l) >= 0 (grpo_rank.allocation.importance). Statistics of a map
  are invariant to its scale, so they are the same on S(l) and on the shares S(l) / sum S.
- A statistic that is undefined for its input (a correlation of a constant vector, an interval from one
  value, the shares of an all-zero map) is NaN, never an exception: the report prints it as n/a.

Why not scipy.stats and statsmodels: importing them takes ~1 s, a third of the report's time budget
(measured). Each function here that used them is the same formula on numpy, checked against scipy.stats
/ statsmodels in tests/test_stats.py; the bootstraps draw the same resamples as scipy.stats.bootstrap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from statistics import NormalDist

import numpy as np

# the evaluation stage computes it for each run's record; re-exported so every statistic is found here
from grpo_rank.evaluation.interval import wilson_interval  # noqa: F401

TOP_FRACTION = 0.3
# up to this many seeds the seed bootstrap enumerates all S^S resamples (4^4 = 256, a fraction of a second)
EXACT_BOOTSTRAP_SEEDS = 4


def _vector(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("empty input")
    return arr


def top_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """How many of n layers make the top `fraction`: fraction * n rounded to the nearest integer (halves
    up, not Python's round-half-to-even), at least 1 and at most n. The study's 35.7% top-30% share of
    28 layers can only come from 8 layers (0.3 * 28 = 8.4): its layers 9-18 carry 43.0%, so any top 9
    would carry at least 38.7%. The product is rounded to 9 decimals first, so that a product that is a
    half in exact arithmetic but a hair off it in floating point still rounds up.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return min(n, max(1, math.floor(round(fraction * n, 9) + 0.5)))


def max_min_ratio(values) -> float:
    """max_l S(l) / min_l S(l) over the per-layer means; inf when a layer has S(l) = 0 and another not."""
    arr = _vector(values)
    lo, hi = arr.min(), arr.max()
    if lo <= 0:
        return math.inf if hi > 0 else math.nan
    return float(hi / lo)


def top_share(values, fraction: float = TOP_FRACTION) -> float:
    """Share of the total carried by the top layers: sort the layers by S(l), descending, and sum the
    shares S(l) / sum S of the first top_count(L, fraction) of them."""
    arr = _vector(values)
    total = arr.sum()
    return float(np.sort(arr)[::-1][:top_count(arr.size, fraction)].sum() / total) if total > 0 else math.nan


def gini(values) -> float:
    """Gini coefficient of the map: sum_i sum_j |S_i - S_j| / (2 L^2 mean S).
    0 when every layer carries the same share, (L - 1) / L when one layer carries everything (the
    population form, without the L / (L - 1) small-sample correction). Computed from the sorted values,
    G = sum_i (2i - L - 1) S_(i) / (L sum S), i = 1..L, which equals the double sum."""
    arr = np.sort(_vector(values))
    if np.any(arr < 0):
        raise ValueError("the Gini coefficient needs non-negative values")
    total, n = arr.sum(), arr.size
    if total <= 0:
        return math.nan
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * arr) / (n * total))


def cv(values) -> float:
    """Coefficient of variation across layers: population standard deviation / mean (ddof = 0)."""
    arr = _vector(values)
    return float(arr.std() / arr.mean()) if arr.mean() != 0 else math.nan


def concentration(values, fraction: float = TOP_FRACTION) -> dict[str, float]:
    """The map's spread in one dict: max_min_ratio, top_share (top `fraction` of layers), gini, cv."""
    return {"max_min_ratio": max_min_ratio(values), f"top{round(100 * fraction)}_share": top_share(values, fraction),
            "gini": gini(values), "cv": cv(values)}


def shares(values) -> np.ndarray:
    """S(l) / sum S along the last axis, so that maps from runs with different gradient scales can be
    compared and averaged. A row that sums to zero (no gradient at all, e.g. a step where no group had
    reward spread) has no shares: NaN, not zeros, so it cannot pass for a map that sums to 1."""
    arr = np.asarray(values, dtype=float)
    total = arr.sum(axis=-1, keepdims=True)
    return np.divide(arr, total, out=np.full_like(arr, np.nan), where=total > 0)


def correlation(x, y) -> dict[str, float]:
    """Pearson r and Spearman rho of two equal-length vectors; NaN when either is constant or n < 3
    (two points always correlate perfectly, which says nothing)."""
    x, y = _vector(x), _vector(y)
    if x.size != y.size:
        raise ValueError(f"lengths differ: {x.size} vs {y.size}")
    (pearson,), (spearman,) = weighted_correlations(x, y, np.ones((1, x.size)))
    return {"pearson": float(pearson), "spearman": float(spearman)}


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks 1..sum(w) (ties share theirs, as scipy.stats.rankdata) in the pooled vector that
    holds values[i] weights[r, i] times, for each row r of the (k x n) integer weights; one sort of the
    n values serves every row: a tie group's rank is the weight below it + (its weight + 1) / 2."""
    order = np.argsort(values, kind="stable")
    srt = values[order]
    new = np.r_[True, srt[1:] != srt[:-1]]  # where a tie group starts, in sorted order
    group_w = np.add.reduceat(weights[:, order], np.flatnonzero(new), axis=1)
    ranks = np.empty(weights.shape)
    ranks[:, order] = (np.cumsum(group_w, axis=1) - (group_w - 1) / 2)[:, np.cumsum(new) - 1]
    return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x and y (n,) with each row of w (k x n) as the values' multiplicities; NaN where the
    values present (w > 0) are constant or fewer than 3."""
    total = w.sum(axis=1, keepdims=True)
    xm, ym = x - (w * x).sum(axis=1, keepdims=True) / total, y - (w * y).sum(axis=1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (w * xm * ym).sum(axis=1) / np.sqrt((w * xm * xm).sum(axis=1) * (w * ym * ym).sum(axis=1))
    # constancy from the values themselves: a mean's rounding leaves a constant vector a ~1e-17 spread
    flat = [np.where(w > 0, v, np.inf).min(axis=1) == np.where(w > 0, v, -np.inf).max(axis=1) for v in (x, y)]
    return np.where(flat[0] | flat[1] | (total[:, 0] < 3), np.nan, np.clip(r, -1.0, 1.0))


def weighted_correlations(x, y, weights) -> tuple[np.ndarray, np.ndarray]:
    """(Pearson r, Spearman rho) of x and y (n,) in each pooled vector that holds value i weights[r, i]
    times (a row of ones: the plain correlations), one per row; NaN where the pooled x or y is constant
    or shorter than 3. The pooled vectors are never built: the sums are weighted."""
    x, y, w = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(weights, dtype=float)
    return _weighted_pearson(x, y, w), _weighted_pearson(weighted_ranks(x, w), weighted_ranks(y, w), w)


def window_sizes(n_steps: int, early: float = 0.25, late: float = 0.25) -> tuple[int, int]:
    """Number of steps in the early and late windows: ceil(fraction * n_steps), at least 1 each."""
    for name, frac in (("early", early), ("late", late)):
        if not 0 < frac <= 1:
            raise ValueError(f"{name} fraction must lie in (0, 1], got {frac}")
    if n_steps < 1:
        raise ValueError("no steps")
    return max(1, math.ceil(round(early * n_steps, 9))), max(1, math.ceil(round(late * n_steps, 9)))


def early_late_stability(step_layer, early: float = 0.25, late: float = 0.25) -> dict[str, float]:
    """Early-vs-late stability of the importance map. `step_layer` is a (steps x layers) matrix of
    per-layer summed module norms, rows in step order. The early map is the per-layer mean over the first
    ceil(early * T) steps, the late map over the last ceil(late * T); the result is their Pearson and
    Spearman correlation across layers (1: the ranking found early holds at the end). `overlap` is 1.0
    when the windows share steps (fewer than about 1 / (early + late) steps) and the correlation is then
    inflated."""
    mat = np.asarray(step_layer, dtype=float)
    if mat.ndim != 2:
        raise ValueError("expected a (steps x layers) matrix")
    n_early, n_late = window_sizes(mat.shape[0], early, late)
    out = correlation(mat[:n_early].mean(axis=0), mat[-n_late:].mean(axis=0))
    out.update(n_early=float(n_early), n_late=float(n_late), overlap=float(n_early + n_late > mat.shape[0]))
    return out


def _t_central(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan theta) for Student's T with integer df: the closed forms of Abramowitz &
    Stegun 26.7.3 (odd df) and 26.7.4 (even df), finite sums in cos^2 theta."""
    sin, cos = math.sin(theta), math.cos(theta)
    if df % 2 == 0:  # sin theta (1 + (1/2) c2 + (1*3)/(2*4) c2^2 + ... up to c2^(df/2 - 1)), c2 = cos^2 theta
        k = np.arange(1, df // 2)
        return sin * (1 + float(np.cumprod((2 * k - 1) / (2 * k) * cos * cos).sum()))
    # (2/pi) (theta + sin cos (1 + (2/3) c2 + (2*4)/(3*5) c2^2 + ... up to c2^((df - 3)/2))); df = 1: 2 theta / pi
    k = np.arange(1, (df - 1) // 2)
    series = 1 + float(np.cumprod(2 * k / (2 * k + 1) * cos * cos).sum())
    return 2 / math.pi * (theta + (sin * cos * series if df > 1 else 0.0))


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with integer df >= 1 (scipy.special.stdtrit without scipy):
    t = sqrt(df) tan(theta), theta found by bisection on [0, pi/2) until it stops moving (the central
    probability grows with theta): within 1e-13 of scipy for 0.005 <= p <= 0.995, ~1e-10 in far tails."""
    if not 0 < p < 1 or df < 1 or int(df) != df:
        raise ValueError(f"need 0 < p < 1 and an integer df >= 1, got p={p}, df={df}")
    target, lo, hi = abs(2 * p - 1), 0.0, math.pi / 2
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_central(mid, int(df)) < target else (lo, mid)
    return math.copysign(math.sqrt(df) * math.tan(mid), p - 0.5)


def t_interval(values, confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high): the mean across seeds and its Student-t interval, mean +- t_{n-1} * s / sqrt(n).
    low and high are NaN for a single value (no spread to estimate); equal to the mean when all values
    are equal (scipy returns NaN for a zero scale; the interval of a zero-variance sample is a point).
    `bounds`: the statistic's range (a correlation's [-1, 1], a share's [0, 1]); the interval is cut to
    it, which keeps its coverage (the true mean lies inside) and stops 3 seeds of r ~ 0.9 printing 1.2."""
    arr = _vector(values)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    sem = float(arr.std(ddof=1) / math.sqrt(arr.size))
    if sem == 0:
        return mean, mean, mean
    # scipy.stats.t.interval: the (1 - c) / 2 and (1 + c) / 2 quantiles of Student's t, scaled
    lo, hi = (t_quantile(q, arr.size - 1) * sem + mean for q in ((1 - confidence) / 2, (1 + confidence) / 2))
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def ols_slope(x, y, confidence: float = 0.95) -> dict[str, float]:
    """Least-squares line y = a + b x: slope b, its Student-t interval b +- t_{n-2} * se(b) with
    se(b) = sqrt(sum e^2 / (n - 2) / sum (x - mean x)^2) (scipy.stats.linregress's stderr), intercept a
    and n. NaN for fewer than 3 points (none included) or a constant x; a point interval when the points
    lie on a line."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"lengths differ: {x.size} vs {y.size}")
    out = {"slope": math.nan, "low": math.nan, "high": math.nan, "intercept": math.nan, "n": float(x.size)}
    if x.size < 3 or np.ptp(x) == 0:
        return out
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ yc) / sxx
    resid = yc - slope * xc
    half = t_quantile((1 + confidence) / 2, x.size - 2) * math.sqrt(float(resid @ resid) / (x.size - 2) / sxx)
    out.update(slope=slope, low=slope - half, high=slope + half, intercept=float(y.mean() - slope * x.mean()))
    return out


def log_ratio_slope(norms, ref_norms, ranks, ref_ranks, confidence: float = 0.95) -> dict[str, float]:
    """How a run's module gradient norms scale with its rank, against a reference run: per layer l,
    d(l) = mean over modules m of log(norms[l, m] / ref_norms[l, m]) and x(l) = log(ranks[l] /
    ref_ranks[l]); the ols_slope of d on x across layers. (layers x modules) or (layers,) inputs;
    a module with a zero norm in either run is left out of its layer's mean, a layer with none left."""
    a, b = (np.asarray(v, dtype=float).reshape(len(v), -1) for v in (norms, ref_norms))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    valid = (a > 0) & (b > 0)
    logs = np.log(np.where(valid, a, 1.0)) - np.log(np.where(valid, b, 1.0))
    count = valid.sum(axis=1)
    keep = count > 0
    x = np.log(np.asarray(ranks, dtype=float) / np.asarray(ref_ranks, dtype=float))[keep]
    return ols_slope(x, logs.sum(axis=1)[keep] / count[keep], confidence)


def normal_half_width(p: float, n: int, confidence: float = 0.95) -> float:
    """The normal-approximation (Wald) half-width z sqrt(p (1 - p) / n) of an accuracy p on n questions:
    what the study reports as "Wilson" +- (p = 0.745, n = 200: 0.0604). NaN for n = 0."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2) * math.sqrt(p * (1 - p) / n) if n > 0 else math.nan


def mcnemar_exact(reference, other) -> dict[str, float]:
    """Exact McNemar test of two runs scored on the same questions. `reference` and `other` are
    per-question booleans (correct or not), aligned by question. b counts questions the reference got
    right and the other wrong, c the reverse; under H0 (same accuracy) b is Binomial(b + c, 1/2) and the
    two-sided p-value is min(1, 2 * P(X <= min(b, c))) (statsmodels' mcnemar(exact=True)), computed in
    exact integer arithmetic. p = 1 when b + c = 0."""
    ref, oth = np.asarray(reference, dtype=bool), np.asarray(other, dtype=bool)
    if ref.shape != oth.shape:
        raise ValueError(f"paired outcomes differ in shape: {ref.shape} vs {oth.shape}")
    return mcnemar_counts(int(np.sum(ref & ~oth)), int(np.sum(~ref & oth)),
                          both=int(np.sum(ref & oth)), neither=int(np.sum(~ref & ~oth)))


def mcnemar_counts(b: int, c: int, both: int = 0, neither: int = 0) -> dict[str, float]:
    """Exact McNemar p-value from the discordant counts b (reference only right) and c (other only
    right); `both` and `neither` (the concordant counts) do not enter the exact test."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    p = min(1.0, float(Fraction(2 * tail, 2 ** n)))  # n = 0 (no discordant pair): 2 * 1 / 1, capped at 1
    return {"b": float(b), "c": float(c), "pvalue": p}


def paired_bootstrap_diff(reference, other, n_resamples: int = 10_000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, float]:
    """Accuracy difference other - reference on the same questions, with a paired bootstrap interval.
    Inputs are per-question outcomes (0/1), 1-D for one pair of runs or 2-D (pairs x questions) for
    several seed pairs on the same questions. Each question's difference is averaged over the pairs,
    d_q = mean_s (other_sq - reference_sq), and the questions are resampled with replacement (so a
    question keeps all its seed pairs together); the interval is the percentile interval of mean(d)
    over the resamples (fixed seed: reruns agree). The resamples and the interval are those of
    scipy.stats.bootstrap(method="percentile") with the same generator (tests/test_stats.py compares).
    """
    ref, oth = np.atleast_2d(np.asarray(reference, dtype=float)), np.atleast_2d(np.asarray(other, dtype=float))
    if ref.shape != oth.shape:
        raise ValueError(f"paired outcomes differ in shape: {ref.shape} vs {oth.shape}")
    d = (oth - ref).mean(axis=0)
    diff = float(d.mean())
    if d.size < 2 or np.ptp(d) == 0:  # no resampling / every resample has the same mean
        return {"diff": diff, "low": math.nan if d.size < 2 else diff, "high": math.nan if d.size < 2 else diff}
    index = np.random.default_rng(seed).integers(0, d.size, (n_resamples, d.size))
    # means in blocks of rows: the same numbers as one d[index] gather, without its n_resamples x n floats
    means = np.concatenate([d[index[i:i + 1000]].mean(axis=-1) for i in range(0, n_resamples, 1000)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"diff": diff, "low": float(low), "high": float(high)}


def pooled_correlation(xs: Sequence, ys: Sequence) -> dict[str, float]:
    """Pearson and Spearman correlation over the pooled (seed, layer) pairs of several seeds."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("need one x and one y vector per seed")
    return correlation(np.concatenate([_vector(x) for x in xs]), np.concatenate([_vector(y) for y in ys]))


def seed_bootstrap_correlation(xs: Sequence, ys: Sequence, n_resamples: int = 2000, confidence: float = 0.95,
                               seed: int = 0) -> dict[str, float]:
    """Pooled correlation of x and y (pooled_correlation) with a bootstrap interval over seeds.
    `xs[s]`, `ys[s]` are seed s's per-layer vectors (e.g. allocated rank and shift in gradient share).
    The seeds, not the layers, are resampled with replacement (layers within a seed are not independent
    draws) and the pooled correlation is recomputed; the interval is the percentile interval of those
    values. With up to 4 seeds every one of the S^S equally likely resamples is enumerated (the exact
    bootstrap distribution, no randomness); with more, `n_resamples` draws from a seeded generator.
    Resamples whose pooled vectors are constant (NaN correlation) are left out.
    With fewer than 2 seeds the interval is NaN. With 2-3 seeds it is a crude range, not a calibrated
    95% interval: read it as "how much the answer moves between seeds".
    """
    out = {**pooled_correlation(xs, ys), "n_seeds": float(len(xs))}
    keys = ("pearson", "spearman")
    if len(xs) < 2:
        out.update({f"{k}_{e}": math.nan for k in keys for e in ("low", "high")})
        return out
    xs, ys = [_vector(x) for x in xs], [_vector(y) for y in ys]
    # resampled here rather than by scipy.stats.bootstrap, which can neither enumerate the S^S resamples
    # of a few seeds nor skip the NaN of a constant resample
    n = len(xs)
    if n <= EXACT_BOOTSTRAP_SEEDS:
        draws = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    dists = _resampled_correlations(xs, ys, draws)
    alpha = (1 - confidence) / 2
    for key, dist in zip(keys, dists):
        dist = dist[np.isfinite(dist)]
        lo, hi = np.quantile(dist, [alpha, 1 - alpha]) if dist.size else (math.nan, math.nan)
        out[f"{key}_low"], out[f"{key}_high"] = float(lo), float(hi)
    return out


def _resampled_correlations(xs: list[np.ndarray], ys: list[np.ndarray], draws: np.ndarray,
                            block_values: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (Pearson, Spearman) of every resample, `draws[r]` listing the seeds of resample r. The
    resample holds seed s's values as often as s was drawn: weighted_correlations with those counts as
    weights, as many resamples at a time as fit in `block_values` values (memory stays flat)."""
    x, y = np.concatenate(xs), np.concatenate(ys)
    seed_of = np.repeat(np.arange(len(xs)), [v.size for v in xs])
    counts = np.zeros((len(draws), len(xs)))
    np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1)
    block = max(1, block_values // x.size)
    parts = [weighted_correlations(x, y, counts[i:i + block][:, seed_of]) for i in range(0, len(draws), block)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])


def group_shares(values_by_name: dict[str, float], groups: dict[str, Sequence[str]]) -> dict[str, float]:
    """Share of the total carried by each group of names (e.g. attention = q,k,v,o projections). Names
    missing from `values_by_name` count as 0; the denominator is the sum over all names given."""
    total = float(sum(values_by_name.values()))
    if total <= 0:
        return {g: math.nan for g in groups}
    return {g: float(sum(values_by_name.get(n, 0.0) for n in names)) / total for g, names in groups.items()}
