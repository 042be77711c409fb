"""The arm's algorithm and lora.r (report/jobs.Arm) on small synthetic sweeps whose answers are known:
a capacity curve's uniform arms at lora.r 1, 2, 4 are separate rows in lora.r order; each algorithm's
uniform landscape sits beside the others'; a record from before the algorithm axis is dapo; jobs that
never wrote a record join their siblings' arm; the tables name a field only where the arms vary in it.

    python -m pytest tests/test_report_arms.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grpo_rank.analysis import report as rp
from grpo_rank.analysis.report.jobs import (
    Arm,
    Job,
    arm_name,
    base_reference,
    shorter_reference,
    uniform_reference,
    varying,
)
from grpo_rank.analysis.report.markdown import label_fields
from grpo_rank.analysis.report.tables import fmt, table1_rows
from grpo_rank.analysis.report.wandb_mirror import summary_values
from tests.conftest import read_csv
from tests.synthetic import make_sweep

SMALL = dict(steps=4, layers=4, modules=2, n_questions=20)


def section(md: str, title: str) -> list[str]:
    """The lines of one `## title` section of report.md."""
    lines = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return [line for line in lines if line]


def table1_header(md: str) -> str:
    """Table 1's header row (the section opens with a sentence on what it shows)."""
    return next(line for line in section(md, "Table 1: accuracy by strategy and budget") if line.startswith("|"))


@pytest.fixture(scope="module")
def capacity(tmp_path_factory):
    """uniform at lora.r 4, 1, 2 (given out of order) x 2 seeds under grpo; the r=1 seed 1 job killed."""
    root = tmp_path_factory.mktemp("capacity")
    sweep = make_sweep(root / "multirun" / "d" / "t", jobs=6, strategies=("uniform",), algorithms=("grpo",),
                       lora_rs=(4, 1, 2), layout="overrides", unfinished=(3,), **SMALL)
    rep = rp.build([sweep], root / "out", use_wandb=False, progress=False)
    return root / "out", rep


@pytest.fixture(scope="module")
def algorithms(tmp_path_factory):
    """uniform and proportional x sft, grpo (given out of order) x 2 seeds at lora.r 8."""
    root = tmp_path_factory.mktemp("algorithms")
    sweep = make_sweep(root / "multirun" / "d" / "t", jobs=8, strategies=("uniform", "proportional"),
                       algorithms=("sft", "grpo"), **SMALL)
    rep = rp.build([sweep], root / "out", use_wandb=False, progress=False)
    return root / "out", rep


def test_uniform_arms_at_each_lora_r_are_rows_in_r_order(capacity):
    out, rep = capacity
    rows = [(r["strategy"], r["algorithm"], r["r"], r["n_ok"], r["n_missing"]) for r in read_csv(out / "table1.csv")]
    assert rows == [("uniform", "grpo", "1", "1", "1"), ("uniform", "grpo", "2", "2", "0"),
                    ("uniform", "grpo", "4", "2", "0")]
    # the killed job is labelled lora.r=1 by its overrides: a missing seed of the r=1 row, shown with its r
    table = [line for line in section(rep.markdown, "Table 1: accuracy by strategy and budget") if line.startswith("|")]
    assert table[0].startswith("| model | task | strategy | budget | alpha mode | algorithm | r | ranks |")
    assert [line.split(" | ")[6] for line in table[2:]] == ["1", "2", "4"]
    missing = section(rep.markdown, "Missing and failed jobs")
    assert "| algorithm | r | seed |" in missing[0] and "| grpo | 1 | 1 | missing |" in missing[2]


def test_one_algorithm_says_so_in_the_landscape_section(capacity):
    _, rep = capacity
    assert section(rep.markdown, "Landscapes by algorithm") == [
        "One algorithm in this sweep (grpo): no landscapes to compare."]


def test_landscapes_put_each_algorithms_uniform_arm_side_by_side(algorithms):
    out, rep = algorithms
    t1 = read_csv(out / "table1.csv")
    # algorithms in grpo_rank.objective.algorithms order within a strategy; one lora.r: no r column anywhere
    assert [(r["strategy"], r["algorithm"]) for r in t1] == [
        ("uniform", "grpo"), ("uniform", "sft"), ("proportional", "grpo"), ("proportional", "sft")]
    assert "| algorithm | ranks |" in table1_header(rep.markdown)
    lines = section(rep.markdown, "Landscapes by algorithm")
    assert lines[1].startswith("| model | task | budget | alpha mode | r | algorithm | max/min | top-30% share")
    cells = {line.split(" | ")[5]: line.strip("| ").split(" | ") for line in lines[3:]}
    assert list(cells) == ["grpo", "sft"]
    st = read_csv(out / "stats.csv")

    def mean(algorithm: str, statistic: str, subset: str = "all") -> str:
        found = [r for r in st if (r["strategy"], r["algorithm"], r["statistic"], r["subset"], r["seed"])
                 == ("uniform", algorithm, statistic, subset, "mean")]
        assert len(found) == 1
        return fmt(float(found[0]["value"]))

    for algorithm, row in cells.items():
        assert row[4] == "8"  # lora.r
        for col, statistic, subset in ((6, "max_min_ratio", "all"), (7, "top30_share", "all"), (8, "gini", "all"),
                                       (9, "early_late_pearson", "all"), (10, "share_attention", "modules"),
                                       (11, "share_ffn", "modules")):
            assert row[col].split(" [")[0] == mean(algorithm, statistic, subset), (algorithm, statistic)


def test_a_strategy_is_compared_with_the_uniform_arm_of_its_algorithm(algorithms):
    out, _ = algorithms
    notes = {(r["algorithm"], r["note"].split(";")[0]) for r in read_csv(out / "stats.csv")
             if r["strategy"] == "proportional" and r["statistic"] == "rank_shift_pearson" and r["seed"] == "s0"}
    assert notes == {(a, f"vs uniform/full (algorithm={a}, alpha_mode=per_rank)") for a in ("grpo", "sft")}
    paired = {(r["algorithm"], r["reference"]) for r in read_csv(out / "paired.csv") if r["strategy"] == "proportional"}
    assert paired == {(a, f"uniform/full (algorithm={a}, alpha_mode=per_rank)") for a in ("grpo", "sft")}


def test_a_record_without_the_algorithm_key_is_dapo_and_one_arm_with_dapo_records(tmp_path):
    old = make_sweep(tmp_path / "multirun" / "d" / "old", jobs=2, strategies=("uniform",), **SMALL)
    new = make_sweep(tmp_path / "multirun" / "d" / "new", jobs=2, strategies=("uniform",), algorithms=("dapo",),
                     **SMALL)
    record = json.loads((old / "0_uniform_full_s0" / "result.json").read_text())
    assert "algorithm" not in record["config"]
    record = json.loads((new / "0_uniform_full_s0" / "result.json").read_text())
    assert record["config"]["algorithm"] == {"name": "dapo"}
    jobs, notes = rp.load([old, new], progress=False)
    assert {(j.sweep.name, j.algorithm, j.arm.algorithm) for j in jobs} == {("old", "dapo", "dapo"),
                                                                              ("new", "dapo", "dapo")}
    # the same arm and seed: the later sweep's job is used, as for any rerun
    assert [j.superseded_by is not None for j in jobs] == [True, True, False, False] and len(notes) == 2
    rep = rp.build([old], tmp_path / "out", use_wandb=False, progress=False)
    assert table1_header(rep.markdown).startswith(
        "| model | task | strategy | budget | alpha mode | ranks |")  # neither algorithm nor r: as before


def test_jobs_without_a_record_join_the_arm_of_their_algorithm(tmp_path):
    sweep = make_sweep(tmp_path / "multirun" / "d" / "t", jobs=4, strategies=("uniform",), algorithms=("grpo", "sft"),
                       unfinished=(3,), **SMALL)
    shutil.rmtree(sweep / "1_uniform_full_s1")  # never started: labelled from multirun.yaml's overrides
    jobs, _ = rp.load([sweep], progress=False)
    assert sorted((j.algorithm, j.seed, j.name) for j in jobs if j.status == "missing") == [
        ("grpo", 1, "1_(no folder)"), ("sft", 1, "3_uniform_full_s1")]
    # without multirun.yaml a killed job's algorithm and lora.r come from its finished siblings
    single = make_sweep(tmp_path / "multirun" / "d" / "single", jobs=2, strategies=("uniform",),
                        algorithms=("sft",), lora_rs=(4,), alpha_modes=("fixed",), unfinished=(1,), **SMALL)
    (single / "multirun.yaml").unlink()
    jobs, _ = rp.load([single], progress=False)
    assert [j.arm for j in jobs] == [Arm("synthetic", "arithmetic", "uniform", "full", "fixed", "lora", "sft", 4, 4)] * 2
    assert [j.status for j in jobs] == ["ok", "missing"]


def test_arm_fields_references_and_names():
    def job(strategy, algorithm="dapo", r=8, alpha_mode="fixed"):
        return Job(sweep=Path("."), name="x", status="ok", strategy=strategy, budget="full", model="m", task="t",
                   alpha_mode=alpha_mode, algorithm=algorithm, r_uniform=r)

    # the base model trains nothing: neither its algorithm nor its lora.r makes an arm
    assert job("none", "sft", 4, "rslora").arm == Arm("m", "t", "none", "full")
    prop = job("proportional", "sft", 4).arm
    assert (prop.algorithm, prop.r) == ("sft", 4)
    arms = {a: [] for a in (job("uniform", "sft", 8).arm, job("uniform", "grpo", 4).arm, job("uniform", "sft", 4).arm,
                            job("none").arm, prop)}
    assert uniform_reference(arms, prop) == job("uniform", "sft", 4).arm
    assert uniform_reference({prop: [], job("uniform", "grpo", 4).arm: []}, prop) is None  # never across algorithms
    assert uniform_reference({prop: [], job("uniform", "sft", 8).arm: []}, prop) is None  # nor across lora.r
    assert base_reference(arms, prop) == Arm("m", "t", "none", "full")
    assert arm_name(prop) == "proportional/full (algorithm=sft)"
    assert arm_name(prop, show={"r"}) == "proportional/full (algorithm=sft, r=4)"
    assert arm_name(job("uniform", r=2).arm, show={"r"}) == "uniform/full (r=2)"
    # lora.r is a column where arms differ in it, the algorithm where one is not dapo
    assert label_fields([job("uniform", r=8).arm, job("random", r=8).arm, job("none").arm]) == [
        "model", "task", "strategy", "budget"]
    assert label_fields([job("uniform", r=2).arm, job("uniform", r=4).arm]) == [
        "model", "task", "strategy", "budget", "r"]
    assert label_fields([job("uniform", "grpo").arm]) == ["model", "task", "strategy", "budget", "algorithm"]


def test_wandb_summary_keys_name_r_only_where_it_varies(capacity, algorithms):
    keys = set(summary_values(table1_rows(capacity[1].jobs), []))
    assert keys == {"accuracy/uniform_full_per_rank_grpo_r1", "accuracy/uniform_full_per_rank_grpo_r2",
                    "accuracy/uniform_full_per_rank_grpo_r4"}
    keys = set(summary_values(table1_rows(algorithms[1].jobs), []))
    assert keys == {f"accuracy/{s}_full_per_rank_{a}" for s in ("uniform", "proportional") for a in ("grpo", "sft")}


def test_a_training_length_sweep_compares_each_arm_with_its_shorter_self(tmp_path):
    """uniform and proportional trained 4 and 8 steps (two sweeps, 2 seeds each, the same questions): four arms,
    told apart by grpo.steps in the tables, and each 8-step arm paired with its 4-step self per seed and across
    seeds, beside each proportional arm against the uniform arm of its length."""
    sweeps = [make_sweep(tmp_path / "multirun" / "d" / f"s{steps}", jobs=4, strategies=("uniform", "proportional"),
                         alpha_modes=("fixed",), steps=steps, layers=4, modules=2, n_questions=20)
              for steps in (4, 8)]
    base = make_sweep(tmp_path / "multirun" / "d" / "base", jobs=1, strategies=("none",), alpha_modes=("fixed",),
                      steps=8, layers=4, modules=2, n_questions=20)
    rp.build([base, *sweeps], tmp_path / "out", use_wandb=False, progress=False)
    t1 = [(r["strategy"], r["steps"]) for r in read_csv(tmp_path / "out" / "table1.csv")]
    assert t1 == [("none", ""), ("uniform", "4"), ("uniform", "8"), ("proportional", "4"), ("proportional", "8")]
    # the base model trains nothing: its length shows as "-", like its lora.r, never as "None"
    base_row = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                    if "none (base model)" in line)
    assert base_row.startswith("| synthetic | arithmetic | none | full | - | none (base model) |"), base_row
    paired = read_csv(tmp_path / "out" / "paired.csv")
    refs = {(r["strategy"], r["steps"], r["reference"]) for r in paired if r["n_pairs"] != "1"}
    assert refs == {("uniform", "8", "uniform/full (steps=4)"), ("proportional", "8", "proportional/full (steps=4)"),
                    ("proportional", "4", "uniform/full (steps=4)"), ("proportional", "8", "uniform/full (steps=8)"),
                    *((s, n, "none (base model)") for s in ("uniform", "proportional") for n in ("4", "8"))}
    longer = [r for r in paired if r["reference"] == "uniform/full (steps=4)"]
    assert [r["seeds"] for r in longer][:2] == ["s0 vs s0", "s1 vs s1"]  # the same seed's shorter run


def test_shorter_reference_is_the_longest_shorter_length_of_the_same_arm():
    def arm(strategy, steps, r=8):
        return Arm("m", "t", strategy, "full", r=r, steps=steps)

    arms = {a: [] for a in (arm("uniform", 5), arm("uniform", 10), arm("uniform", 20), arm("uniform", 10, r=4),
                            arm("random", 10))}
    assert shorter_reference(arms, arm("uniform", 20)) == arm("uniform", 10)
    assert shorter_reference(arms, arm("uniform", 5)) is None
    assert shorter_reference(arms, arm("random", 10)) is None  # never another strategy or lora.r
    assert varying(arms) == {"r", "steps"} and varying([arm("uniform", 5), arm("random", 5)]) == frozenset()
    assert arm_name(arm("uniform", 20), show={"steps"}) == "uniform/full (steps=20)"
