"""The report's design statistics end to end on synthetic sweeps in the real record format: the paired
comparisons across seeds (no pooled McNemar), the base model as one evaluation, the format columns of
Table 1, and the rank shift against an independent uniform run with its no-effect null. The evaluation
stage's new record fields are checked on known replies.

    python -m pytest tests/test_report_design.py -q
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.analysis import report as rp
from grpo_rank.analysis import stats_design
from grpo_rank.analysis.stats import wilson_interval
from grpo_rank.data.tasks import Example
from grpo_rank.evaluation.evaluate import EvalResult, outcome
from grpo_rank.record.result import read_result, write_result
from tests.synthetic import make_sweep

N_Q = 60


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows_of(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """No effect planted (rslora: no scaling either), ranks allocated from the same-seed uniform run's
    training S(l) as a publishing uniform job gives them, 3 seeds, and the base model."""
    sweep = make_sweep(tmp_path_factory.mktemp("published") / "multirun" / "d" / "t", jobs=9, steps=6, layers=28,
                       modules=3, n_questions=N_Q, strategies=("none", "uniform", "proportional"),
                       alpha_modes=("rslora",), full_weight=True, published=True)
    return rp.build([sweep], sweep / "report", use_wandb=False, progress=False)


def test_the_base_model_is_one_evaluation_with_its_wilson_interval(published):
    t1 = {r["strategy"]: r for r in read_csv(published.out / "table1.csv")}
    base = t1["none"]
    assert base["seeds"] == "s0 s1 s2" and base["accuracy_per_seed"].count(";") == 0
    correct = round(float(base["accuracy_mean"]) * N_Q)
    assert (float(base["accuracy_ci95_low"]), float(base["accuracy_ci95_high"])) == pytest.approx(
        wilson_interval(correct, N_Q), rel=1e-12)
    assert base["accuracy_interval"].startswith("Wilson (one evaluation")
    assert "(Wilson, one evaluation)" in published.markdown.split("## Table 1")[1].split("\n## ")[0]
    # its one evaluation is the reference of every seed pair
    paired = read_csv(published.out / "paired.csv")
    assert {r["seeds"] for r in rows_of(paired, strategy="uniform", reference="none (base model)")} == {
        "s0 vs s0", "s1 vs s0", "s2 vs s0", "across 3 seed pairs"}


def test_table1_shows_both_scorings_and_the_well_formed_fraction(published):
    t1 = {r["strategy"]: r for r in read_csv(published.out / "table1.csv")}
    # synthetic replies: the base model in prose, trained runs tagged but on every fifth question
    base, uni = t1["none"], t1["uniform"]
    assert float(base["accuracy_tagged_mean"]) == 0.0 and float(base["well_formed_mean"]) == 0.0
    assert float(base["accuracy_any_mean"]) == pytest.approx(float(base["accuracy_mean"]))
    assert float(uni["well_formed_mean"]) == pytest.approx(0.8)
    assert float(uni["accuracy_tagged_mean"]) < float(uni["accuracy_any_mean"]) == pytest.approx(
        float(uni["accuracy_mean"]))
    assert uni["format_from"] == "eval_outcomes.jsonl"
    # by hand, from the rows of seed 0's uniform job
    rows = [json.loads(line) for line in (published.out.parent / "3_uniform_full_s0" / "eval_outcomes.jsonl")
            .read_text().splitlines()]
    tagged = np.mean([r["correct"] and r["tagged"] for r in rows])
    assert uni["format_per_seed"].startswith(f"s0 {tagged:.3f}/")


def test_seed_pairs_are_compared_across_seeds_not_pooled(published):
    paired = read_csv(published.out / "paired.csv")
    assert not [r for r in paired if r["seeds"].startswith("pooled")]
    across = rows_of(paired, strategy="proportional", reference="uniform/full (alpha_mode=rslora)",
                     seeds="across 3 seed pairs")
    assert len(across) == 1
    row = across[0]
    assert row["interval"] == "two-level bootstrap (seeds, then questions)" and row["mcnemar_p"] == ""
    per_seed = rows_of(paired, strategy="proportional", reference="uniform/full (alpha_mode=rslora)", n_pairs="1")
    assert len(per_seed) == 3 and all(r["test"] == "exact McNemar" for r in per_seed)
    # the across-seed difference is the mean of the per-seed ones, its t-interval theirs
    diffs = [float(r["diff"]) for r in per_seed]
    assert float(row["diff"]) == pytest.approx(np.mean(diffs))
    from grpo_rank.analysis.stats import t_interval

    assert (float(row["seed_t_low"]), float(row["seed_t_high"])) == pytest.approx(t_interval(diffs)[1:], rel=1e-9)
    for r in [*per_seed, row]:
        n, disc = int(r["n_questions"]), float(r["discordance"])
        assert float(r["mde80"]) == pytest.approx(stats_design.min_detectable_difference(n, disc))
    section = published.markdown.split("## Paired comparisons on the same questions")[1].split("\n## ")[0]
    assert "across 3 seed pairs" in section and "MDE (80%)" in section and "| pooled" not in section


def test_the_rank_shift_is_measured_against_an_independent_run_beside_its_null(published):
    st = read_csv(published.out / "stats.csv")
    prop = dict(strategy="proportional", subset="all")
    for view in ("", "_normalised", "_full_weight"):
        same = rows_of(st, **prop, seed="pooled", statistic=f"rank_shift_pearson{view}")[0]
        ind = rows_of(st, **prop, seed="pooled", statistic=f"rank_shift_pearson{view}_independent")[0]
        # the ranks came from the same-seed uniform run: the independent reference is the other seeds'
        assert "independent of the rank source (other seeds)" in ind["note"]
        s0 = rows_of(st, **prop, seed="s0", statistic=f"rank_shift_pearson{view}_independent")[0]
        assert "vs the mean of uniform s1 s2 (rank source: s0, same run)" in s0["note"]
        for observed in (same, ind):
            null = rows_of(st, **prop, seed="null", statistic=observed["statistic"])[0]
            p = rows_of(st, **prop, seed="pooled", statistic=observed["statistic"] + "_null_p")[0]
            assert null["n"] == "1000" and "layer-permuted noise of 3 uniform runs" in null["note"]
            # no effect was planted: the observed r lies within its null's central 95%
            assert float(null["ci_low"]) < float(observed["value"]) < float(null["ci_high"]), (view, observed)
            assert float(p["value"]) > 0.05
        # regression to the mean: against its own rank source, no effect is expected below 0
        assert float(rows_of(st, **prop, seed="null", statistic=f"rank_shift_pearson{view}")[0]["value"]) < -0.05
    head = published.markdown.split("## Headline")[1].split("## Table 1")[0]
    assert "Beyond scaling: no rank-shift correlation is resolved: within its no-effect null" in head
    section = published.markdown.split("## Rank shift against an independent uniform run")[1].split("\n## ")[0]
    assert "r (the study's definition)" in section and section.count("| synthetic |") == 3


def test_a_rank_source_elsewhere_makes_the_same_seed_run_the_independent_one(tmp_path):
    """The default synthetic proportional job allocates from the seed's own profile, not from the uniform
    run: that run is then a replicate of the source's configuration, and the two correlations agree."""
    sweep = make_sweep(tmp_path / "multirun" / "d" / "t", jobs=4, steps=4, layers=8, modules=2, n_questions=20,
                       strategies=("uniform", "proportional"))
    st = read_csv(rp.build([sweep], tmp_path / "out", use_wandb=False, progress=False).out / "stats.csv")
    for seed in ("s0", "s1"):
        same = rows_of(st, strategy="proportional", seed=seed, statistic="rank_shift_pearson")[0]
        ind = rows_of(st, strategy="proportional", seed=seed, statistic="rank_shift_pearson_independent")[0]
        assert float(ind["value"]) == pytest.approx(float(same["value"]), rel=1e-12)
        assert "vs the same-seed uniform run, not the rank source (another run)" in ind["note"]


def test_the_evaluation_records_both_scorings_and_well_formedness(tmp_path):
    ex = Example(id="q1", question="2 + 5?", answer="7")
    replies = {"<think>add</think><answer>7</answer>": (True, True, True, True),
               "<think>add</think> so 7": (False, False, True, False),
               "The answer is <answer>7</answer>": (True, True, True, False),
               "<think></think><answer>8</answer>": (False, False, False, True)}
    rows = []
    for reply, (correct_tagged, tagged_ok, any_ok, formed) in replies.items():
        row = outcome(len(rows), ex, reply, "tagged")
        assert (row["correct"], row["tagged_correct"], row["value_correct"], row["well_formed"]) == (
            correct_tagged, tagged_ok, any_ok, formed), reply
        assert outcome(0, ex, reply, "any")["correct"] == any_ok
        rows.append(row)
    result = EvalResult(n=4, correct=sum(r["correct"] for r in rows), parse_failures=0, outcomes=rows, generation={})
    summary = result.summary("test")
    assert (summary.accuracy, summary.accuracy_tagged, summary.accuracy_any, summary.well_formed_fraction) == (
        0.5, 0.5, 0.75, 0.5)
    # the record round-trips them; a record written before them reads with None
    job = tmp_path / "job"
    sweep = make_sweep(tmp_path / "sweep", jobs=1, steps=2, layers=4, modules=2, n_questions=4,
                       strategies=("uniform",))
    (job_dir,) = [p.parent for p in sweep.glob("*/result.json")]
    old = read_result(job_dir)
    assert old.eval.accuracy_tagged is None and old.eval.well_formed_fraction is None
    old.eval = summary
    job.mkdir()
    write_result(job, old)
    assert read_result(job).eval == summary
    assert not math.isnan(summary.accuracy_any)
