"""The interval of one run's accuracy, computed by the evaluation stage for its record (EvalSummary) and
read again by the report (grpo_rank/analysis/stats.py re-exports it). Pure Python: no torch, no numpy."""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of one run's accuracy correct / n (as statsmodels' proportion_confint
    method="wilson"): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z the normal quantile
    of (1 + confidence) / 2, clipped to [0, 1] (mathematically the bound is exactly 0 at correct = 0 and 1
    at correct = n; floating point leaves ~1e-17 there). NaN for n = 0 (no questions, no accuracy)."""
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p, z2 = correct / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)
    hi = 1.0 if correct >= n else min(1.0, centre + half)
    return float(lo), float(hi)
