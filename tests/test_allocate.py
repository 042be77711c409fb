"""Allocation invariants, property-based: budget kept, bounds and multiples kept, deterministic per
seed, proportional monotone in importance; bad inputs rejected with a reason."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_rank.allocate import (AllocationError, Bounds, allocate, budget_total, lora_param_count,
                                projection_shapes, proportional, random_ranks, uniform)

B = Bounds(4, 64, 4)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    imp = draw(st.lists(st.floats(0, 1e6, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    if sum(imp) <= 0:
        imp[0] = 1.0
    units = draw(st.integers(n * 1, n * 16))  # feasible totals under [4, 64] in steps of 4
    return imp, units * 4


def assert_valid(ranks, n, total, bounds=B):
    assert len(ranks) == n
    assert sum(ranks) == total
    assert all(bounds.r_min <= r <= bounds.r_max for r in ranks)
    assert all(r % bounds.multiple == 0 for r in ranks)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_proportional_keeps_budget_bounds_and_multiples(problem):
    imp, total = problem
    assert_valid(proportional(imp, total, B), len(imp), total)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_proportional_is_monotone_in_importance(problem):
    imp, total = problem
    ranks = proportional(imp, total, B)
    for i in range(len(imp)):
        for j in range(len(imp)):
            if imp[i] > imp[j]:
                assert ranks[i] >= ranks[j], (imp[i], imp[j], ranks[i], ranks[j])


@settings(max_examples=100, deadline=None)
@given(problems(), st.floats(0.01, 100))
def test_proportional_is_scale_invariant(problem, scale):
    imp, total = problem
    scaled = [v * scale for v in imp]
    if all(math.isfinite(v) for v in scaled) and sum(scaled) > 0:
        assert proportional(scaled, total, B) == proportional(imp, total, B)


def test_proportional_matches_eq3_when_no_clip_binds():
    # S shares 1:2:1:4 of 64 -> exactly 8, 16, 8, 32 (Eq. 3 with no rounding or clipping)
    assert proportional([1, 2, 1, 4], 64, B) == [8, 16, 8, 32]


def test_clipped_mass_goes_to_the_other_layers():
    # one dominant layer is capped at r_max; the budget still sums exactly
    ranks = proportional([100, 1, 1, 1], 128, B)
    assert ranks[0] == 64 and sum(ranks) == 128
    # 64 left for three equal layers: 21.3 each, so two get 20 and the first (lowest index) 24
    assert ranks[1:] == [24, 20, 20]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.data())
def test_random_is_valid_and_deterministic_per_seed(n, seed, data):
    total = 4 * data.draw(st.integers(n, 16 * n))
    a = random_ranks(n, total, B, seed)
    assert_valid(a, n, total)
    assert a == random_ranks(n, total, B, seed)


def test_random_differs_between_seeds():
    draws = {tuple(random_ranks(28, 896, B, s)) for s in range(5)}
    assert len(draws) == 5


def test_uniform_full_budget_is_r_everywhere():
    assert uniform(28, 896, B, r=32) == [32] * 28
    assert allocate("uniform", total=896, num_layers=28, r=32) == [32] * 28


def test_reduced_budget_is_on_budget():
    total = budget_total(32, 28, 0.7, 4)
    assert total == 628  # 627.2 rounded to the nearest multiple of 4
    assert_valid(allocate("proportional", [float(i + 1) for i in range(28)], total=total), 28, total)
    assert_valid(allocate("uniform", total=total, num_layers=28, r=32), 28, total)


@pytest.mark.parametrize("imp, why", [
    ([0.0, 0.0], "sums to zero"),
    ([1.0, float("nan")], "non-finite"),
    ([1.0, float("inf")], "non-finite"),
    ([1.0, -1.0], "negative"),
    ([], "empty"),
])
def test_bad_profiles_are_errors_not_uniform(imp, why):
    with pytest.raises(AllocationError, match=why):
        proportional(imp, 64, B)


@pytest.mark.parametrize("n, total, why", [
    (4, 8, "cannot be split"),      # below 4 layers x r_min
    (2, 256, "cannot be split"),    # above 2 layers x r_max
    (4, 66, "not a multiple"),
])
def test_infeasible_budgets_say_why(n, total, why):
    with pytest.raises(AllocationError, match=why):
        proportional([1.0] * n, total, B)


def test_dispatch_errors():
    with pytest.raises(AllocationError, match="needs an importance"):
        allocate("proportional", None, total=64, num_layers=4)
    with pytest.raises(AllocationError, match="unknown strategy"):
        allocate("greedy", [1.0], total=4)
    with pytest.raises(AllocationError, match="layers"):
        allocate("proportional", [1.0, 1.0], total=64, num_layers=4)
    assert allocate("none", total=64, num_layers=4) is None


def test_qwen_closed_form_count():
    # Qwen2.5-1.5B: hidden 1536, 12 heads of 128, 2 KV heads, FFN 8960; r=32 on all 7 projections of 28 layers
    shapes = projection_shapes(1536, 8960, 12, 2, 128,
                               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert lora_param_count(shapes, [32] * 28) == 36_929_536


def test_allocation_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, grpo_rank.allocate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
