"""The statistics of the study's design, as pure functions of arrays (numpy only; no torch, no scipy):
comparisons of two arms over several seeds on the same questions, their power, and the no-effect null
of the rank-shift correlation. `grpo_rank.report` applies them (tables.py, gradstats.py); each is
checked on data with known answers, against scipy / statsmodels where they have it
(tests/test_stats_design.py):

    >>> from grpo_rank.analysis.stats_design import sign_flip_test, min_detectable_difference
    >>> sign_flip_test([1, 1, 1, 1, 1])["pvalue"]  # 5 questions, all one way: 2 / 2^5
    0.0625
    >>> round(min_detectable_difference(100, 0.2), 4)  # 100 questions, 20% discordant
    0.1253

The design: each arm is trained once per seed, a strategy's seed s is paired with its reference's seed
s, and every run answers the same questions. Seeds and questions are therefore crossed, not
independent replicates: a question answered by three seed pairs is one question, not three. Hence
- per seed pair, the exact McNemar test (stats.mcnemar_counts);
- across seeds, the per-question difference averaged over the seed pairs, d_q, tested by flipping the
  sign of whole questions (sign_flip_test): a test over questions, given the trained models;
- the two-level bootstrap (seeds, then questions within each seed) for an interval that also moves
  with the seeds, beside the seed-level t-interval (stats.t_interval of the per-seed differences);
- the minimum detectable difference of each test (min_detectable_difference).
A deterministic arm (the base model under greedy decoding) gives the same answers under every seed:
it is one evaluation, used as the reference of every seed pair.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from grpo_rank.analysis.stats import t_interval

# exact sign-flip distribution by convolution up to this many (questions x attainable sums) cells
EXACT_CELLS = 50_000_000
_NORMAL = NormalDist()


def sign_flip_test(d, n_resamples: int = 100_000, seed: int = 0) -> dict:
    """Two-sided sign-flip permutation test of H0: each question's difference d_q is symmetric about 0
    (the two arms are exchangeable on every question). Statistic T = sum_q d_q; under H0 every one of
    the 2^n sign patterns eps is equally likely and p = P(|sum_q eps_q d_q| >= |T|).

    `d` holds integers (the per-question difference summed over the seed pairs, an integer in
    [-S, S]; the mean over seeds is this / S, which changes no p-value): the null distribution is then
    convolved exactly, one question at a time, when n x (2 sum |d| + 1) <= EXACT_CELLS ("exact").
    Otherwise, or for non-integer d, `n_resamples` sign patterns from a generator seeded with `seed`
    (reruns agree) and p = (1 + #{|T*| >= |T|}) / (1 + n_resamples) ("monte carlo"). The exact p equals
    scipy.stats.permutation_test(permutation_type="samples") on one sample.
    """
    d = np.asarray(d, dtype=float).ravel()
    t_obs = float(d.sum())
    out = {"statistic": float(d.mean()) if d.size else math.nan, "pvalue": 1.0, "n": float(d.size),
           "method": "exact", "n_resamples": 0.0}
    a = np.abs(d[d != 0])
    if a.size == 0:
        return out
    integer = bool(np.all(a == np.round(a)))
    span = int(a.sum()) if integer else 0
    if integer and a.size * (2 * span + 1) <= EXACT_CELLS:
        # dist[k] = P(sum = k - span), one question at a time: half the mass moves up by a_q, half down
        dist = np.zeros(2 * span + 1)
        dist[span] = 1.0
        for step in a.astype(int):
            dist = 0.5 * (np.concatenate([dist[step:], np.zeros(step)]) + np.concatenate([np.zeros(step), dist[:-step]]))
        sums = np.arange(-span, span + 1)
        out["pvalue"] = float(min(1.0, dist[np.abs(sums) >= round(abs(t_obs))].sum()))
        return out
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 2000):  # blocks of sign patterns: memory stays flat
        signs = rng.integers(0, 2, (min(2000, n_resamples - start), a.size)) * 2 - 1
        # a hair of tolerance: a resample equal to |T| must count however its sum was rounded
        hits += int(np.sum(np.abs(signs @ a) >= abs(t_obs) * (1 - 1e-12)))
    out.update(pvalue=(1 + hits) / (1 + n_resamples), method="monte carlo", n_resamples=float(n_resamples))
    return out


def two_level_bootstrap(diffs, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0,
                        block: int = 500) -> dict[str, float]:
    """Mean difference over seeds and questions with a two-level percentile bootstrap interval.
    `diffs` is (seeds x questions): diffs[s, q] = other - reference on question q in seed pair s. A
    resample draws S seeds with replacement, then, for each seed drawn, n of its questions with
    replacement (fresh draws for every seed drawn); its statistic is the mean of the S x n values drawn.
    The interval is the (1 -+ confidence) / 2 quantiles of that statistic (numpy's linear
    interpolation) over `n_resamples` resamples from a generator seeded with `seed`. With one seed it
    is the question bootstrap; NaN without two questions. The seeds are drawn all at once and the
    questions `block` resamples at a time, so the numbers do not depend on memory."""
    x = np.atleast_2d(np.asarray(diffs, dtype=float))
    n_seeds, n_q = x.shape
    diff = float(x.mean()) if x.size else math.nan
    if n_q < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan}
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, (n_resamples, n_seeds))
    means = np.empty(n_resamples)
    for i in range(0, n_resamples, block):
        s = seeds[i:i + block]
        # int32: the same draws as numpy's default int64 (both take its 32-bit path below 2^32), half the memory
        q = rng.integers(0, n_q, (len(s), n_seeds, n_q), dtype=np.int32)
        means[i:i + block] = x[s[:, :, None], q].mean(axis=(1, 2))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"diff": diff, "low": float(low), "high": float(high)}


def detection_power(delta: float, n: int, second_moment: float, alpha: float = 0.05) -> float:
    """Normal-approximation power of the two-sided level-alpha test of a mean over n questions whose
    per-question differences have second moment D about 0 (the test's null variance of the mean is D /
    n): Phi(delta sqrt(n / D) - z) + Phi(-delta sqrt(n / D) - z), z = Phi^-1(1 - alpha / 2). It is
    statsmodels' NormalIndPower(ratio=0) at effect size delta / sqrt(D)."""
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    shift = abs(delta) * math.sqrt(n / second_moment)
    return _NORMAL.cdf(shift - z) + _NORMAL.cdf(-shift - z)


def min_detectable_difference(n: int, second_moment: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest accuracy difference delta that the test of a paired comparison detects with
    probability `power` at two-sided level `alpha` (detection_power(delta) = power, solved by
    bisection), from its number of questions n and its observed discordance D: for one seed pair D =
    (b + c) / n, the McNemar test's discordant fraction; across S seed pairs D = mean_q d_q^2, d_q the
    per-question difference averaged over the pairs (the sign-flip test's null variance is D / n). About
    (z_{1-alpha/2} + z_power) sqrt(D / n): 2.80 sqrt(D / n) at 80% and 0.05. NaN when n = 0 or D = 0 (no
    discordant question: no spread to scale a difference by)."""
    if n <= 0 or not second_moment > 0:
        return math.nan
    lo, hi = 0.0, 1.0
    while detection_power(hi, n, second_moment, alpha) < power:
        hi *= 2.0
    for _ in range(100):  # power rises with delta: bisection to machine precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if detection_power(mid, n, second_moment, alpha) < power else (lo, mid)
    return 0.5 * (lo + hi)


def paired_design(reference, other, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Across S seed pairs on the same n questions: `reference` and `other` (S x n) per-question
    correctness, row s the seed pair s (a deterministic reference repeats its one evaluation in every
    row). d_q = mean_s (other - reference); the sign-flip test on the integer sums S d_q; the two-level
    bootstrap interval; the Student-t interval of the S per-seed differences (NaN for one seed; a point
    when they are equal); D = mean_q d_q^2 and the minimum detectable difference at 80% power, 0.05."""
    ref, oth = (np.atleast_2d(np.asarray(v, dtype=float)) for v in (reference, other))
    if ref.shape != oth.shape:
        raise ValueError(f"paired outcomes differ in shape: {ref.shape} vs {oth.shape}")
    x = oth - ref
    n_seeds, n_q = x.shape
    flip = sign_flip_test(np.rint(x.sum(axis=0)), seed=seed)
    boot = two_level_bootstrap(x, n_resamples, seed=seed)
    _, t_lo, t_hi = t_interval(x.mean(axis=1))
    second = float(np.mean(x.mean(axis=0) ** 2)) if n_q else math.nan
    return {"diff": boot["diff"], "boot_low": boot["low"], "boot_high": boot["high"], "t_low": t_lo, "t_high": t_hi,
            "pvalue": flip["pvalue"], "method": flip["method"], "n_seeds": float(n_seeds), "n_questions": float(n_q),
            "discordance": second, "mde80": min_detectable_difference(n_q, second)}


def proportional_ranks(weights, total: int, r_min: int, r_max: int, multiple: int) -> np.ndarray:
    """allocation.allocate.proportional on every row of `weights` (K x L) at once, with the same numbers:
    units of `multiple`; per row the scale c with sum_l clip(c w_l, r_min / m, r_max / m) <= total / m
    found by the same bisection (sums taken left to right, as Python's sum), then floors, and the units
    left over one each to the layers with the largest fractional parts (ties: higher weight, then lower
    layer), pass after pass, never above r_max. The caller checks feasibility (allocate.check_feasible)."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    m = multiple
    lo, hi, units = r_min // m, r_max // m, total // m

    def total_at(c: np.ndarray) -> np.ndarray:
        return np.cumsum(np.clip(c[:, None] * w, lo, hi), axis=1)[:, -1]

    c_lo, c_hi = np.zeros(len(w)), np.ones(len(w))
    while (grow := (total_at(c_hi) < units) & (c_hi < 1e300)).any():
        c_hi[grow] *= 2.0
    for _ in range(200):  # allocate's 200 halvings; stop early once no row moves (then none ever will)
        mid = 0.5 * (c_lo + c_hi)
        ok = total_at(mid) <= units
        new_lo, new_hi = np.where(ok, mid, c_lo), np.where(ok, c_hi, mid)
        if np.array_equal(new_lo, c_lo) and np.array_equal(new_hi, c_hi):
            break
        c_lo, c_hi = new_lo, new_hi
    x = np.clip(c_lo[:, None] * w, lo, hi)
    floors = np.floor(x + 1e-9).astype(int)
    left = units - floors.sum(axis=1)
    layer = np.broadcast_to(np.arange(w.shape[1]), w.shape)
    order = np.lexsort((layer, -w, -(x - floors)), axis=-1)
    while (left > 0).any():
        room = np.take_along_axis(floors < hi, order, axis=1)
        give_sorted = room & (np.cumsum(room, axis=1) <= left[:, None])
        if not give_sorted[left > 0].any():
            raise ValueError("could not place the rounding remainder under r_max")
        give = np.zeros_like(give_sorted)
        np.put_along_axis(give, order, give_sorted, axis=1)
        floors += give
        left -= give.sum(axis=1)
    return floors * m


def _row_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks 1..n along the last axis, ties sharing theirs (scipy.stats.rankdata per row)."""
    n = a.shape[-1]
    order = np.argsort(a, axis=-1, kind="stable")
    srt = np.take_along_axis(a, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), a.shape)
    starts = np.ones(a.shape, dtype=bool)
    starts[..., 1:] = srt[..., 1:] != srt[..., :-1]
    ends = np.ones(a.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[..., ::-1], axis=-1)[..., ::-1]
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    flat = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0) | (x.shape[-1] < 3)
    return np.where(flat, np.nan, np.clip(r, -1.0, 1.0))


def row_correlations(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(Pearson r, Spearman rho) of each row pair of x and y (K x n); NaN where a row is constant."""
    x, y = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    return _row_pearson(x, y), _row_pearson(_row_ranks(x), _row_ranks(y))


def _log_spread(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The landscape and run noise of R runs' maps (R x L, all > 0) in log-share space: g = the mean
    log share per layer, and each run's residual from it scaled by sqrt(R / (R - 1)), so that its
    variance estimates one run's (the mean of R runs holds 1 / R of it)."""
    logs = np.log(maps / maps.sum(axis=1, keepdims=True))
    g = logs.mean(axis=0)
    return g, (logs - g) * math.sqrt(len(maps) / (len(maps) - 1))


def seed_shared_fraction(uniform_maps, strategy_maps) -> float:
    """The share lambda of a run's noise that the runs of one seed have in common, under no effect:
    row s of `uniform_maps` and of `strategy_maps` (S x L, S >= 2, all > 0) are the two arms' maps of
    seed s; u and x their log shares minus their arm's mean over seeds; lambda = sum(u x) /
    sqrt(sum(u^2) sum(x^2)) over seeds and layers, clipped to [0, 1]. With no effect the strategy run is
    the landscape plus the seed's part plus its own noise, as the uniform run is, so this correlation
    estimates var(seed part) / var(noise). An effect of the ranks on the strategy's map, which follow
    the uniform run's, can only raise it (a more cautious null). NaN for fewer than 2 seeds."""
    u, x = (np.log(np.asarray(m, dtype=float) / np.sum(m, axis=1, keepdims=True)) for m in (uniform_maps, strategy_maps))
    if len(u) < 2 or u.shape != x.shape:
        return math.nan
    u, x = u - u.mean(axis=0), x - x.mean(axis=0)
    denom = math.sqrt(float((u * u).sum() * (x * x).sum()))
    return float(np.clip((u * x).sum() / denom, 0.0, 1.0)) if denom > 0 else 0.0


def rank_shift_null(source_maps, view_maps: dict, seeds: list[dict], shared: dict | None = None,
                    n_draws: int = 1000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Null distribution, under no effect of the ranks, of the pooled rank-shift correlations of a
    gradient-aware arm, by layer permutation of the uniform runs' noise.

    `source_maps` (R x L): R >= 2 uniform runs' S(l) in the signal the ranks were allocated from;
    `view_maps[v]` (R x L): the same runs' S(l) in view v, whose shift is correlated. `seeds`: per seed
    of the arm, its budget (total, r_min, r_max, multiple: its record's allocation), `confounded`
    (its same-seed uniform run is the run its ranks came from) and `n_independent` (how many uniform
    runs of other seeds its independent reference averages; when not confounded, its reference is the
    same-seed uniform run). `shared[v]` (and `shared["source"]`): lambda, the share of the noise the
    runs of one seed have in common (seed_shared_fraction; 0 where not given).

    No effect: every run, the strategy's included, is the landscape times noise. The landscape is g
    (_log_spread: per layer the mean log share of the R runs); a noise draw is a residual rho_r of a
    run r drawn at random with its layers permuted at random, rho_r o pi; a run of seed k is exp(g +
    sqrt(lambda) rho_k + sqrt(1 - lambda) rho_run) renormalised, rho_k one draw for the seed and rho_run
    one for the run, the same draws in every view of the run. Per draw and seed: a rank source A (ranks
    = proportional_ranks of A's source map with the seed's budget), a strategy run X of the same seed,
    and references; the same-run shift is share(X) - share(A) when `confounded` (the study's
    definition), else share(X) - share(C), C another run of the seed; the independent shift is
    share(X) - the mean share of `n_independent` runs of other seeds, or share(X) - share(C) when not
    confounded. Returns, per view, each draw's pooled (Pearson, Spearman) over the seeds' (rank, shift)
    pairs: {"same_run": (n_draws, 2), "independent": (n_draws, 2)}. Seeded generator: reruns agree."""
    src = np.asarray(source_maps, dtype=float)
    views = {v: np.asarray(m, dtype=float) for v, m in view_maps.items()}
    if len(src) < 2 or np.any(src <= 0) or any(m.shape != src.shape or np.any(m <= 0) for m in views.values()):
        raise ValueError("need >= 2 runs with positive S(l) on the same layers in every view")
    shared = shared or {}
    spread = {"source": (*_log_spread(src), shared.get("source", 0.0)),
              **{v: (*_log_spread(m), shared.get(v, 0.0)) for v, m in views.items()}}
    rng = np.random.default_rng(seed)
    n_runs, n_layers = src.shape

    def noise(count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` noise draws per null draw: which run's residual, and its layer permutation."""
        perm = rng.permuted(np.broadcast_to(np.arange(n_layers), (n_draws, count, n_layers)), axis=-1)
        return rng.integers(0, n_runs, (n_draws, count)), perm

    def run(view: str, seed_part, run_part) -> np.ndarray:
        """Shares (n_draws x count x L) of runs with these seed and run draws, in one view."""
        g, rho, lam = spread[view]
        dev = sum(math.sqrt(w) * np.take_along_axis(rho[r], p, axis=-1)
                  for w, (r, p) in ((lam, seed_part), (1 - lam, run_part)) if w > 0)
        m = np.exp(g + dev)
        return m / m.sum(axis=-1, keepdims=True)

    # each seed's columns of the pooled (draw x seed-layer) arrays, written in place: per-seed blocks joined
    # at the end would hold every value twice, and these arrays grow with the seeds
    width = len(seeds) * n_layers
    ranks_all = np.empty((n_draws, width))
    shifts = {v: {"same_run": np.empty((n_draws, width)), "independent": np.empty((n_draws, width))} for v in views}
    for i, s in enumerate(seeds):
        cols = slice(i * n_layers, (i + 1) * n_layers)
        m = max(1, int(s["n_independent"]))
        own, a, x, c, others, other_runs = noise(1), noise(1), noise(1), noise(1), noise(m), noise(m)
        ranks_all[:, cols] = proportional_ranks(run("source", own, a)[:, 0], s["total"], s["r_min"], s["r_max"],
                                                s["multiple"])
        for v in views:
            x_v = run(v, own, x)[:, 0]
            c_v = run(v, own, c)[:, 0]
            shifts[v]["same_run"][:, cols] = x_v - (run(v, own, a)[:, 0] if s["confounded"] else c_v)
            shifts[v]["independent"][:, cols] = x_v - (run(v, others, other_runs).mean(axis=1) if s["confounded"]
                                                       else c_v)
    return {v: {k: _blocked_correlations(ranks_all, pooled) for k, pooled in by.items()} for v, by in shifts.items()}


def _blocked_correlations(x: np.ndarray, y: np.ndarray, rows: int = 100) -> np.ndarray:
    """np.stack(row_correlations(x, y), axis=1), `rows` draws at a time: every statistic is per row, so the
    values are the same, and the rank and centring temporaries stay the size of one block."""
    parts = [row_correlations(x[i:i + rows], y[i:i + rows]) for i in range(0, len(x), rows)]
    return np.stack([np.concatenate([r for r, _ in parts]), np.concatenate([rho for _, rho in parts])], axis=1)


def null_summary(null, observed: float, confidence: float = 0.95) -> dict[str, float]:
    """The null distribution's mean, its central `confidence` range (quantiles, numpy's linear
    interpolation) and the two-sided p of `observed` against it: min(1, 2 min((1 + #{null <= obs}) / (1 +
    K), (1 + #{null >= obs}) / (1 + K))), over the K finite draws. NaN where there is none."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if null.size == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan, "n": 0.0}
    alpha = (1 - confidence) / 2
    low, high = np.quantile(null, [alpha, 1 - alpha])
    k = null.size
    p = (min(1.0, 2 * min((1 + np.sum(null <= observed)) / (1 + k), (1 + np.sum(null >= observed)) / (1 + k)))
         if math.isfinite(observed) else math.nan)
    return {"mean": float(null.mean()), "low": float(low), "high": float(high), "p": float(p), "n": float(k)}
