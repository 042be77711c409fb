"""The report on a sweep where some GRPO steps had no gradient (no group with reward spread).

Under GRPO a step whose groups all have equal rewards has zero advantages and so a zero gradient: its
records are all zeros. The default sweep meets this (a seed whose first step had no spread), and the
report then stopped with `ValueError: empty input` on the "at init" slope. Here seed 2's first training
step is zeroed in every job and one proportional job has no gradient at any step: the report must
write every file, use the first step with a gradient as "at init", and name what it skipped.

    python -m pytest tests/test_report_no_gradient.py -q
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpo_rank.analysis import report as rp
from tests.conftest import read_csv
from tests.synthetic import make_sweep


def zero_steps(job_dir, steps: set[int] | None) -> None:
    """Zero the training-phase norms of `steps` (every step when None) in a job's grad_norms.parquet."""
    path = job_dir / "grad_norms.parquet"
    table = pq.read_table(path)
    cols = table.to_pydict()
    for i, (phase, step) in enumerate(zip(cols["phase"], cols["step"])):
        if phase == "train" and (steps is None or step in steps):
            cols["norm"][i] = 0.0
    pq.write_table(pa.table(cols, schema=table.schema), path)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep = make_sweep(tmp_path_factory.mktemp("nograd") / "multirun" / "d" / "t", jobs=9, steps=6, layers=12,
                       modules=7, n_questions=20, strategies=("uniform", "proportional", "random"),
                       alpha_modes=("fixed",), full_weight=True, noise=0.05)
    folders = sorted(p for p in sweep.iterdir() if p.is_dir())
    for folder in folders:
        if folder.name.endswith("_s2"):
            zero_steps(folder, {1})
    dead = next(f for f in folders if "proportional" in f.name and f.name.endswith("_s1"))
    zero_steps(dead, None)
    return rp.build([sweep], sweep / "report", use_wandb=False, progress=False), dead


def test_every_file_is_written(report):
    rep, _ = report
    for name in ("report.md", "table1.csv", "stats.csv", "paired.csv", "rank_shift.csv", "capacity.csv",
                 "fig1_uniform_grad_share.png", "fig2_amplification.png"):
        assert (rep.out / name).stat().st_size > 0, name


def test_init_statistics_use_the_first_step_with_a_gradient(report):
    rep, _ = report
    st = read_csv(rep.out / "stats.csv")
    init = [r for r in st if r["statistic"] == "scaling_slope_init" and r["seed"] == "s2"]
    assert init, "seed 2 keeps its init slopes"
    for r in init:
        assert "step 2 vs 2" in r["note"] and math.isfinite(float(r["value"]))
    # seed 0 had a gradient at step 1: unchanged
    assert all("step 1 vs 1" in r["note"] for r in st if r["statistic"] == "scaling_slope_init" and r["seed"] == "s0")


def test_a_run_without_any_gradient_is_skipped_where_it_must_be(report):
    rep, dead = report
    st = read_csv(rep.out / "stats.csv")
    # no "at init" slope for the dead job's seed (proportional s1); its mean-over-steps slope is n/a, not a crash
    assert not [r for r in st if r["statistic"].endswith("_init") and r["strategy"] == "proportional"
                and r["seed"] == "s1"]
    # a map that is zero everywhere has no shares: its concentration statistics are n/a, never an exception
    for r in st:
        if r["strategy"] == "proportional" and r["seed"] == "s1" and r["statistic"] in ("max_min_ratio", "top30_share"):
            assert r["value"] in ("", "nan")


def test_the_report_names_what_it_skipped_and_why(report):
    rep, dead = report
    md = rep.markdown
    assert "no gradient at train step 1 (every norm zero" in md and "reward spread" in md
    assert md.count("use step 2, the first with a gradient") == 3  # the three seed-2 jobs
    assert f"{dead.name}" in md and "scaling slopes are skipped" in md
