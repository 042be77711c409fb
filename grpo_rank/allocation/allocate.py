"""Rank allocation: from a per-layer importance profile and a rank budget to per-layer LoRA ranks.

Pure Python, no torch: every function here is tested by invariants (tests/test_allocate.py).

    >>> from grpo_rank.allocation.allocate import allocate, Bounds
    >>> allocate("proportional", [1.0, 2.0, 1.0, 4.0], total=64, bounds=Bounds(4, 64, 4))
    [8, 16, 8, 32]

Proportional follows the study's Eq. 3, r(l) = clip(round(S(l) / sum S * R_total), r_min, r_max) in
multiples of `multiple`, with two changes that keep the total exactly on budget:
- where the clip binds, the mass it removes (or adds) is handed to the unclipped layers, i.e. the
  scale c in clip(c * S(l)) is solved for so that the clipped ranks sum to the budget (water-filling);
- rounding is by largest remainder, not to nearest: each layer gets floor(c * S(l)) units and the units
  left over go one each to the layers with the largest fractional parts (ties: higher importance,
  then lower layer index). This keeps ranks monotone in importance.

The two controls carry no gradient information and differ in what they hold fixed:
- random: the study's control, ranks in [r/2, 3r/2] (16-48 at r=32) in multiples of `multiple`, drawn
  uniformly from every rank vector in those bounds that meets the budget exactly (see random_ranks);
- shuffled: the proportional arm's own ranks, permuted by the seed: the same multiset of ranks (same
  spread, same parameter count), placed without regard to which layer earned them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpo_rank.errors import InputError
from grpo_rank.record.result import Allocation


class AllocationError(InputError):
    """The profile or budget cannot yield a valid allocation; the message says why."""


@dataclass(frozen=True)
class Bounds:
    r_min: int = 4
    r_max: int = 64
    multiple: int = 4


def budget_total(r: int, num_layers: int, fraction: float, multiple: int) -> int:
    """The total rank of a budget: `fraction` of r on every layer.

    The full budget (fraction 1) is the uniform arm's, exactly r * num_layers whatever r is, so the
    capacity curve's r=1 and r=2 (no multiples of 4) keep their true total; a strategy that cannot
    split it in multiples of `multiple` says so. A reduced budget is rounded to the nearest multiple.
    """
    if fraction == 1:
        return r * num_layers
    return multiple * round(r * num_layers * fraction / multiple)


def check_feasible(num_layers: int, total: int, bounds: Bounds) -> None:
    lo, hi, m = bounds.r_min, bounds.r_max, bounds.multiple
    if total % m:
        raise AllocationError(f"total rank {total} is not a multiple of {m}: at budget.fraction=1 the budget is "
                              f"lora.r * layers, so choose a lora.r that is a multiple of lora.multiple={m}")
    if not num_layers * lo <= total <= num_layers * hi:
        raise AllocationError(
            f"total rank {total} cannot be split over {num_layers} layers with ranks in [{lo}, {hi}]: "
            f"it must lie in [{num_layers * lo}, {num_layers * hi}]"
        )


def check_importance(importance: Sequence[float]) -> list[float]:
    vals = [float(v) for v in importance]
    if not vals:
        raise AllocationError("importance profile is empty")
    if not all(math.isfinite(v) for v in vals):
        raise AllocationError("importance profile has non-finite values (NaN or inf gradients in profiling?)")
    if any(v < 0 for v in vals):
        raise AllocationError("importance profile has negative values; gradient norms are >= 0")
    if sum(vals) <= 0:
        raise AllocationError(
            "importance profile sums to zero: every gradient was zero while profiling "
            "(no reward spread in any group?); refusing to fall back to uniform silently"
        )
    return vals


def _clipped_units(weights: list[float], units: int, lo: int, hi: int) -> list[float]:
    """Real-valued x(l) = clip(c * w(l), lo, hi) with sum x <= units, as close to it as floats allow."""
    def total_at(c: float) -> float:
        return sum(min(hi, max(lo, c * w)) for w in weights)

    c_lo, c_hi = 0.0, 1.0
    while total_at(c_hi) < units and c_hi < 1e300:
        c_hi *= 2.0
    for _ in range(200):  # bisection: 200 halvings exhaust double precision
        mid = 0.5 * (c_lo + c_hi)
        if total_at(mid) <= units:
            c_lo = mid
        else:
            c_hi = mid
    return [min(hi, max(lo, c_lo * w)) for w in weights]


def _largest_remainder(x: list[float], weights: list[float], units: int, hi: int) -> list[int]:
    # a hair of tolerance so that 7.9999999 from the bisection counts as 8
    floors = [int(math.floor(v + 1e-9)) for v in x]
    left = units - sum(floors)
    order = sorted(range(len(x)), key=lambda i: (-(x[i] - floors[i]), -weights[i], i))
    while left > 0:
        gave = False
        for i in order:
            if left == 0:
                break
            if floors[i] < hi:
                floors[i] += 1
                left -= 1
                gave = True
        if not gave:  # unreachable after check_feasible; a guard against an endless loop
            raise AllocationError("could not place the rounding remainder under r_max")
    return floors


def proportional(importance: Sequence[float], total: int, bounds: Bounds) -> list[int]:
    """Ranks proportional to importance, clipped to the bounds, summing exactly to `total`."""
    weights = check_importance(importance)
    check_feasible(len(weights), total, bounds)
    m = bounds.multiple
    lo, hi, units = bounds.r_min // m, bounds.r_max // m, total // m
    x = _clipped_units(weights, units, lo, hi)
    return [u * m for u in _largest_remainder(x, weights, units, hi)]


def uniform(num_layers: int, total: int, bounds: Bounds, r: int | None = None) -> list[int]:
    """The same rank everywhere; when the budget does not split evenly, the lower layers get one more unit."""
    if r is not None and r * num_layers == total:
        return [r] * num_layers  # the study's uniform arm, also for an r that is no multiple of `multiple`
    return proportional([1.0] * num_layers, total, bounds)


def random_bounds(num_layers: int, total: int, bounds: Bounds) -> tuple[int, int]:
    """The random arm's rank range: [c/2, 3c/2] around the mean rank c = total / num_layers (16-48 at
    r=32, the study's), narrowed to multiples of `multiple` inside [r_min, r_max]. Raises when no rank
    vector in that range meets the budget."""
    m = bounds.multiple
    mean = total / num_layers
    # integer arithmetic: ceil(mean / 2) and floor(3 * mean / 2) in multiples of m, exact for any total
    lo = max(bounds.r_min, m * -(-total // (2 * num_layers * m)))
    hi = min(bounds.r_max, m * (3 * total // (2 * num_layers * m)))
    if not (lo <= hi and num_layers * lo <= total <= num_layers * hi):
        raise AllocationError(
            f"lora.r: strategy=random needs ranks in [{mean / 2:g}, {3 * mean / 2:g}] (half to 1.5x the mean rank "
            f"{mean:g}) in multiples of lora.multiple={m} within [{bounds.r_min}, {bounds.r_max}] summing to {total}, "
            f"and none do; use a mean rank of at least {2 * m} (raise lora.r or budget.fraction) "
            f"or lower lora.multiple")
    check_feasible(num_layers, total, bounds)  # lo and hi lie inside the bounds; this checks the multiple
    return lo, hi


def _count_table(num_layers: int, units: int, span: int) -> list[list[int]]:
    """ways[n][u]: how many vectors of n integers in [0, span] sum to u (exact big integers)."""
    ways = [[0] * (units + 1) for _ in range(num_layers + 1)]
    ways[0][0] = 1
    for n in range(1, num_layers + 1):
        prev, row = ways[n - 1], ways[n]
        for u in range(units + 1):
            row[u] = sum(prev[u - k] for k in range(min(span, u) + 1))
    return ways


def random_ranks(num_layers: int, total: int, bounds: Bounds, seed: int) -> list[int]:
    """The control arm: ranks drawn uniformly from all vectors in random_bounds(...) that sum to `total`.

    Drawn exactly, with no rejection loop: a table counts the completions of every partial sum, and each
    layer's rank is drawn in turn with probability proportional to the number of ways the remaining
    layers can still meet the budget. Every valid vector is equally likely, so every layer has the same
    marginal; at the full budget the range is symmetric about the mean rank r, and that marginal is close
    to uniform over the range (16, 20, ..., 48 at r=32, each about 1/9), conditioned on the exact sum.
    """
    lo, hi = random_bounds(num_layers, total, bounds)
    m = bounds.multiple
    span, units = (hi - lo) // m, (total - num_layers * lo) // m  # units above lo to place, each in [0, span]
    ways = _count_table(num_layers, units, span)
    rng = random.Random(f"grpo-rank/random-ranks/{seed}")  # a string seed is stable across Python versions
    ranks = []
    for n in range(num_layers, 0, -1):
        pick = rng.randrange(ways[n][units])  # a uniform index into the valid completions from here
        for k in range(min(span, units) + 1):
            if pick < ways[n - 1][units - k]:
                break
            pick -= ways[n - 1][units - k]
        ranks.append(lo + m * k)
        units -= k
    return ranks


def shuffled_ranks(importance: Sequence[float], total: int, bounds: Bounds, seed: int) -> list[int]:
    """The proportional arm's ranks in a seeded random order: the same ranks, no gradient information
    about where they go. A permutation can leave equal ranks in place, so for few distinct ranks some
    seeds return the proportional ranks themselves."""
    ranks = proportional(importance, total, bounds)
    random.Random(f"grpo-rank/shuffled-ranks/{seed}").shuffle(ranks)
    return ranks


@dataclass(frozen=True)
class Strategy:
    needs_profile: bool
    trains: bool
    allocate: Callable[..., list[int] | None]
    # the ranks move during training (adalora.py); `allocate` gives the budget they must end on
    adaptive: bool = False


def _none(importance, num_layers, total, bounds, seed, r):
    return None


STRATEGIES: dict[str, Strategy] = {
    "none": Strategy(needs_profile=False, trains=False, allocate=_none),
    "uniform": Strategy(
        needs_profile=False, trains=True,
        allocate=lambda importance, num_layers, total, bounds, seed, r: uniform(num_layers, total, bounds, r)),
    "proportional": Strategy(
        needs_profile=True, trains=True,
        allocate=lambda importance, num_layers, total, bounds, seed, r: proportional(importance, total, bounds)),
    "random": Strategy(
        needs_profile=False, trains=True,
        allocate=lambda importance, num_layers, total, bounds, seed, r: random_ranks(num_layers, total, bounds, seed)),
    "shuffled": Strategy(
        needs_profile=True, trains=True,
        allocate=lambda importance, num_layers, total, bounds, seed, r:
            shuffled_ranks(importance, total, bounds, seed)),
    # AdaLoRA: every module starts at adalora.init_r and is masked down to this budget while it trains
    "adalora": Strategy(
        needs_profile=False, trains=True, adaptive=True,
        allocate=lambda importance, num_layers, total, bounds, seed, r: uniform(num_layers, total, bounds, r)),
}


def allocate(
    strategy: str,
    importance: Sequence[float] | None = None,
    *,
    total: int,
    bounds: Bounds = Bounds(),
    num_layers: int | None = None,
    seed: int = 0,
    r: int | None = None,
) -> list[int] | None:
    """Dispatch by strategy name; `num_layers` defaults to the length of `importance`."""
    if strategy not in STRATEGIES:
        raise AllocationError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy]
    if spec.needs_profile and importance is None:
        raise AllocationError(f"strategy {strategy!r} needs an importance profile")
    if num_layers is None:
        if importance is None:
            raise AllocationError("pass num_layers when there is no importance profile")
        num_layers = len(importance)
    if importance is not None and len(importance) != num_layers:
        raise AllocationError(f"importance has {len(importance)} layers, the model has {num_layers}")
    return spec.allocate(importance, num_layers, total, bounds, seed, r)


def plan(strategy: str, importance: Sequence[float] | None, *, r: int, num_layers: int, fraction: float,
         bounds: Bounds, seed: int) -> Allocation:
    """The allocation stage: the budget of `fraction` of r on every layer, split by `strategy`."""
    total = budget_total(r, num_layers, fraction, bounds.multiple)
    ranks = allocate(strategy, importance, total=total, bounds=bounds, num_layers=num_layers, seed=seed, r=r)
    return Allocation(ranks=list(ranks or []), total=sum(ranks or []), budget_total=total, r_min=bounds.r_min,
                      r_max=bounds.r_max, multiple=bounds.multiple, num_layers=num_layers,
                      importance=[float(v) for v in importance] if importance is not None else None)


def lora_param_count(shapes: dict[str, tuple[int, int]], ranks: Sequence[int]) -> int:
    """Closed-form count of LoRA parameters: r * (in + out) for every targeted module of every layer.

    `shapes` maps a projection name to its (in_features, out_features), the same in every layer.
    """
    per_rank = sum(i + o for i, o in shapes.values())
    return per_rank * sum(ranks)


def projection_shapes(
    hidden: int, intermediate: int, num_heads: int, num_kv_heads: int, head_dim: int, targets: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """(in, out) of each Llama/Qwen2 projection named in `targets`."""
    q_out, kv_out = num_heads * head_dim, num_kv_heads * head_dim
    table = {
        "q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out), "o_proj": (q_out, hidden),
        "gate_proj": (hidden, intermediate), "up_proj": (hidden, intermediate), "down_proj": (intermediate, hidden),
    }
    return {t: table[t] for t in targets}
