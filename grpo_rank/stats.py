"""The statistics of the cross-run report, as pure functions of arrays (numpy, scipy, statsmodels; no torch).

Every function takes plain numbers and returns plain numbers, so each one is tested on inputs whose
answer is known by hand (tests/test_stats.py). `grpo_rank.report` applies them to the job folders:

    >>> from grpo_rank.stats import max_min_ratio, top_share, gini
    >>> max_min_ratio([1.0, 2.0, 1.5])
    2.0
    >>> round(top_share([1, 1, 1, 1, 1, 1, 1, 1, 1, 11], 0.3), 3)  # top ceil(0.3 * 10) = 3 layers
    0.65
    >>> gini([1.0, 1.0, 1.0])
    0.0

Conventions shared by all functions:
- An importance map is one value per layer, S(l) >= 0 (grpo_rank.importance: the per-layer sum of
  module gradient norms, averaged over steps). Statistics of a map are invariant to its scale, so they
  are the same on S(l) and on the shares S(l) / sum S.
- A statistic that is undefined for its input (a correlation of a constant vector, an interval from one
  value) is NaN, never an exception: the report prints it as n/a.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

TOP_FRACTION = 0.3
# up to this many seeds the seed bootstrap enumerates all S^S resamples (4^4 = 256, a fraction of a second)
EXACT_BOOTSTRAP_SEEDS = 4


def _vector(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("empty input")
    return arr


def top_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """How many of n layers make the top `fraction`: ceil(fraction * n), at least 1 and at most n.

    The product is rounded to 9 decimals first, because 0.3 * 10 is 3.0000000000000004 in floating
    point and a bare ceil would take 4 layers instead of 3. For the study's 28 layers this is 9
    (0.3 * 28 = 8.4 rounded up), so "the top 30%" is never less than 30% of the layers.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return min(n, max(1, math.ceil(round(fraction * n, 9))))


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
    if total <= 0:
        return math.nan
    k = top_count(arr.size, fraction)
    return float(np.sort(arr)[::-1][:k].sum() / total)


def gini(values) -> float:
    """Gini coefficient of the map: sum_i sum_j |S_i - S_j| / (2 L^2 mean S).

    0 when every layer carries the same share, (L - 1) / L when one layer carries everything (the
    population form, without the L / (L - 1) small-sample correction). Computed from the sorted values,
    G = sum_i (2i - L - 1) S_(i) / (L sum S), i = 1..L, which equals the double sum.
    """
    arr = np.sort(_vector(values))
    if np.any(arr < 0):
        raise ValueError("the Gini coefficient needs non-negative values")
    total = arr.sum()
    if total <= 0:
        return math.nan
    n = arr.size
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * arr) / (n * total))


def cv(values) -> float:
    """Coefficient of variation across layers: population standard deviation / mean (ddof = 0)."""
    arr = _vector(values)
    if arr.mean() == 0:
        return math.nan
    return float(sps.variation(arr, ddof=0))


def concentration(values, fraction: float = TOP_FRACTION) -> dict[str, float]:
    """The map's spread in one dict: max_min_ratio, top_share (top `fraction` of layers), gini, cv."""
    return {
        "max_min_ratio": max_min_ratio(values),
        f"top{round(100 * fraction)}_share": top_share(values, fraction),
        "gini": gini(values),
        "cv": cv(values),
    }


def shares(values) -> np.ndarray:
    """S(l) / sum S, so that maps from runs with different gradient scales can be compared and averaged."""
    arr = np.asarray(values, dtype=float)
    total = arr.sum(axis=-1, keepdims=True)
    return np.divide(arr, total, out=np.full_like(arr, np.nan), where=total > 0)


def correlation(x, y) -> dict[str, float]:
    """Pearson r and Spearman rho of two equal-length vectors; NaN when either is constant or n < 3
    (two points always correlate perfectly, which says nothing)."""
    x, y = _vector(x), _vector(y)
    if x.size != y.size:
        raise ValueError(f"lengths differ: {x.size} vs {y.size}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": math.nan, "spearman": math.nan}
    return {"pearson": float(sps.pearsonr(x, y).statistic), "spearman": float(sps.spearmanr(x, y).statistic)}


def window_sizes(n_steps: int, early: float = 0.25, late: float = 0.25) -> tuple[int, int]:
    """Number of steps in the early and late windows: ceil(fraction * n_steps), at least 1 each."""
    for name, frac in (("early", early), ("late", late)):
        if not 0 < frac <= 1:
            raise ValueError(f"{name} fraction must lie in (0, 1], got {frac}")
    if n_steps < 1:
        raise ValueError("no steps")
    return (max(1, math.ceil(round(early * n_steps, 9))), max(1, math.ceil(round(late * n_steps, 9))))


def early_late_stability(step_layer, early: float = 0.25, late: float = 0.25) -> dict[str, float]:
    """Early-vs-late stability of the importance map.

    `step_layer` is a (steps x layers) matrix of per-layer summed module norms, rows in step order.
    The early map is the per-layer mean over the first ceil(early * T) steps, the late map the mean over
    the last ceil(late * T) steps; the result is their Pearson and Spearman correlation across layers.
    1 means the layer ranking found early in training holds at the end. `overlap` is 1.0 when the two
    windows share steps (fewer than about 1 / (early + late) steps were recorded) and the correlation is
    then inflated.
    """
    mat = np.asarray(step_layer, dtype=float)
    if mat.ndim != 2:
        raise ValueError("expected a (steps x layers) matrix")
    n_early, n_late = window_sizes(mat.shape[0], early, late)
    out = correlation(mat[:n_early].mean(axis=0), mat[-n_late:].mean(axis=0))
    out.update(n_early=float(n_early), n_late=float(n_late),
               overlap=float(n_early + n_late > mat.shape[0]))
    return out


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean across seeds and its Student-t interval, mean +- t_{n-1} * s / sqrt(n).

    low and high are NaN for a single value (no spread to estimate); equal to the mean when all values
    are equal (scipy returns NaN for a zero scale; the interval of a zero-variance sample is a point).
    """
    arr = _vector(values)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    sem = float(sps.sem(arr))
    if sem == 0:
        return mean, mean, mean
    lo, hi = sps.t.interval(confidence, df=arr.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of one run's accuracy correct / n (statsmodels proportion_confint)."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


def mcnemar_exact(reference, other) -> dict[str, float]:
    """Exact McNemar test of two runs scored on the same questions.

    `reference` and `other` are per-question booleans (correct or not), aligned by question. b counts
    questions the reference got right and the other wrong, c the reverse; under H0 (same accuracy) b is
    Binomial(b + c, 1/2) and the two-sided p-value is statsmodels' mcnemar(exact=True),
    min(1, 2 * P(X <= min(b, c))). p = 1 when b + c = 0.
    """
    ref = np.asarray(reference, dtype=bool)
    oth = np.asarray(other, dtype=bool)
    if ref.shape != oth.shape:
        raise ValueError(f"paired outcomes differ in shape: {ref.shape} vs {oth.shape}")
    return mcnemar_counts(int(np.sum(ref & ~oth)), int(np.sum(~ref & oth)),
                          both=int(np.sum(ref & oth)), neither=int(np.sum(~ref & ~oth)))


def mcnemar_counts(b: int, c: int, both: int = 0, neither: int = 0) -> dict[str, float]:
    """Exact McNemar p-value from the discordant counts b (reference only right) and c (other only right)."""
    from statsmodels.stats.contingency_tables import mcnemar

    if b + c == 0:
        p = 1.0  # no discordant pair: no evidence either way
    else:
        p = float(mcnemar([[both, b], [c, neither]], exact=True).pvalue)
    return {"b": float(b), "c": float(c), "pvalue": p}


def paired_bootstrap_diff(reference, other, n_resamples: int = 10_000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, float]:
    """Accuracy difference other - reference on the same questions, with a paired bootstrap interval.

    Inputs are per-question outcomes (0/1), 1-D for one pair of runs or 2-D (pairs x questions) for
    several seed pairs on the same questions. Each question's difference is averaged over the pairs,
    d_q = mean_s (other_sq - reference_sq), and the questions are resampled with replacement (so a
    question keeps all its seed pairs together); the interval is the percentile interval of mean(d)
    over the resamples (scipy.stats.bootstrap, method="percentile", fixed seed: reruns agree).
    """
    ref = np.atleast_2d(np.asarray(reference, dtype=float))
    oth = np.atleast_2d(np.asarray(other, dtype=float))
    if ref.shape != oth.shape:
        raise ValueError(f"paired outcomes differ in shape: {ref.shape} vs {oth.shape}")
    d = (oth - ref).mean(axis=0)
    diff = float(d.mean())
    if d.size < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan}
    if np.ptp(d) == 0:
        return {"diff": diff, "low": diff, "high": diff}  # every resample has the same mean
    res = sps.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", rng=np.random.default_rng(seed))
    return {"diff": diff, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}


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
    point = pooled_correlation(xs, ys)
    out = {"pearson": point["pearson"], "spearman": point["spearman"], "n_seeds": float(len(xs))}
    keys = ("pearson", "spearman")
    if len(xs) < 2:
        out.update({f"{k}_{e}": math.nan for k in keys for e in ("low", "high")})
        return out
    xs = [_vector(x) for x in xs]
    ys = [_vector(y) for y in ys]

    # resampled here rather than by scipy.stats.bootstrap, which can neither enumerate the S^S resamples
    # of a few seeds nor skip the NaN of a constant resample
    n = len(xs)
    if n <= EXACT_BOOTSTRAP_SEEDS:
        draws = list(itertools.product(range(n), repeat=n))
    else:
        draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n)).tolist()
    resampled = [pooled_correlation([xs[i] for i in d], [ys[i] for i in d]) for d in draws]
    alpha = (1 - confidence) / 2
    for key in keys:
        dist = np.array([r[key] for r in resampled])
        dist = dist[np.isfinite(dist)]
        lo, hi = np.quantile(dist, [alpha, 1 - alpha]) if dist.size else (math.nan, math.nan)
        out[f"{key}_low"], out[f"{key}_high"] = float(lo), float(hi)
    return out


def group_shares(values_by_name: dict[str, float], groups: dict[str, Sequence[str]]) -> dict[str, float]:
    """Share of the total carried by each group of names (e.g. attention = q,k,v,o projections).

    Names missing from `values_by_name` count as 0; the denominator is the sum over all names given.
    """
    total = float(sum(values_by_name.values()))
    if total <= 0:
        return {g: math.nan for g in groups}
    return {g: float(sum(values_by_name.get(n, 0.0) for n in names)) / total for g, names in groups.items()}
