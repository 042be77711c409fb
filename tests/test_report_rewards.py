"""The per-reward gradient landscapes (report/rewards.py): reward_grads.parquet reduced per component by
Eq. 2, rewards.csv's statistics against answers planted in the synthetic records
(synthetic.reward_profiles) and computed by hand, the section and Figure 5, and reports of sweeps
without per-reward records unchanged.

    python -m pytest tests/test_report_rewards.py -q
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from grpo_rank.allocation.importance import read_cube
from grpo_rank.analysis import report as rp
from grpo_rank.analysis.report import tables
from grpo_rank.analysis.report.capacity import capacity_points, capacity_rows
from grpo_rank.analysis.report.gradstats import stats_rows
from grpo_rank.analysis.report.jobs import active, arms_of
from grpo_rank.analysis.report.markdown import ReportData, render
from grpo_rank.analysis.report.rewards import FIG5, REWARDS_CSV, reward_rows, strict_winners
from grpo_rank.record.files import GRADS, REWARD_GRADS, read_grad_records, write_grad_records
from tests.conftest import read_csv
from tests.synthetic import make_sweep, reward_profiles

L, STEPS, MODULES = 6, 3, 2
SMALL = dict(jobs=4, steps=STEPS, layers=L, modules=MODULES, n_questions=20, strategies=("uniform", "proportional"),
             profile_steps=2)
COMPONENTS = ["format", "correctness", "kl"]


def by_hand(path: Path, phase: str) -> dict[str, np.ndarray]:
    """S_k(l) straight from the rows: per (step, layer, module) sqrt(A^2 + B^2), summed over modules,
    averaged over steps; a Python dict group-by, not importance.py's."""
    cols = read_grad_records(path)
    cells: dict[tuple, float] = {}
    for ph, reward, step, layer, module, norm in zip(cols["phase"], cols["reward"], cols["step"], cols["layer"],
                                                     cols["module"], cols["norm"]):
        if ph == phase:
            key = (reward, int(step), int(layer), module)
            cells[key] = cells.get(key, 0.0) + float(norm) ** 2
    out: dict[str, np.ndarray] = {}
    for reward in dict.fromkeys(k[0] for k in cells):
        steps = sorted({k[1] for k in cells if k[0] == reward})
        s = np.zeros(L)
        for (rw, _, layer, _), sq in cells.items():
            if rw == reward:
                s[layer] += math.sqrt(sq)
        out[reward] = s / len(steps)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """uniform and proportional (which profiles itself: profile-phase rows too) x seeds 0, 1, every job
    with reward_grads.parquet."""
    root = tmp_path_factory.mktemp("rewards")
    sweep = make_sweep(root / "multirun" / "d" / "t", per_reward=True, **SMALL)
    rep = rp.build([sweep], root / "out", use_wandb=False, progress=False)
    return sweep, root / "out", rep


def mean_row(rows: list[dict], strategy: str, reward: str, statistic: str) -> dict:
    found = [r for r in rows if (r["strategy"], r["seed"], r["reward"], r["statistic"]) == (strategy, "mean", reward,
                                                                                              statistic)]
    assert len(found) == 1, (strategy, reward, statistic)
    return found[0]


def test_each_component_is_reduced_by_eq2_on_the_training_phase(built):
    sweep, _, rep = built
    planted = reward_profiles(L)
    weights = np.linspace(1.0, 2.0, MODULES).sum()
    steps = 1 + np.arange(1, STEPS + 1) / STEPS
    for job in active(rep.jobs):
        s = job.rewards
        assert s.components == COMPONENTS and s.phase == "train" and s.n_steps == STEPS
        hand = by_hand(sweep / job.name / REWARD_GRADS, "train")
        for k, name in enumerate(COMPONENTS):
            np.testing.assert_allclose(s.importance[k], hand[name], rtol=1e-12)
            # the planted norms: (1 + seed) x profile x module weights x the step factor
            np.testing.assert_allclose(s.importance[k], (1 + job.seed) * planted[name] * weights * steps.mean(),
                                       rtol=1e-6)
        # the combined landscape is the job's own training-phase S(l)
        np.testing.assert_array_equal(s.combined, job.grads.importance)


def test_dominated_layers_compare_shares_not_norms(built):
    _, out, _ = built
    rows = read_csv(out / REWARDS_CSV)
    for strategy in ("uniform", "proportional"):
        want = {"format": ("0 1", ""), "correctness": ("2 3 4 5", "0 1 2 3 4 5"), "kl": ("", "")}
        for reward, (dominated, largest) in want.items():
            assert mean_row(rows, strategy, reward, "dominated_layers")["value"] == dominated
            assert mean_row(rows, strategy, reward, "largest_norm_layers")["value"] == largest
            for seed in ("s0", "s1"):
                got = {r["statistic"]: r["value"] for r in rows
                       if (r["strategy"], r["seed"], r["reward"]) == (strategy, seed, reward)}
                assert (got["dominated_layers"], got["largest_norm_layers"]) == (dominated, largest)


def test_landscape_statistics_and_norm_shares_equal_the_planted_answers(built):
    _, out, rep = built
    rows = read_csv(out / REWARDS_CSV)
    planted = reward_profiles(L)
    grand = sum(p.sum() for p in planted.values())
    for reward, p in planted.items():
        s = np.sort(p)[::-1]
        want = {"max_min_ratio": p.max() / p.min(), "top30_share": s[:2].sum() / s.sum(),  # k = round(1.8) = 2
                "gini": np.abs(p[:, None] - p[None, :]).sum() / (2 * L * L * p.mean()),
                "norm_share": p.sum() / grand}
        for strategy in ("uniform", "proportional"):
            for statistic, value in want.items():
                r = mean_row(rows, strategy, reward, statistic)
                # seeds differ in scale, not in shape: the interval is a point
                assert float(r["value"]) == pytest.approx(value, rel=1e-6, abs=1e-9), (reward, statistic)
                assert float(r["ci_low"]) == pytest.approx(value, rel=1e-6, abs=1e-9) and r["n"] == "2"
    assert [float(mean_row(rows, "uniform", k, "norm_share")["value"]) for k in COMPONENTS] == pytest.approx(
        [2.04 / 49.04, 44 / 49.04, 3 / 49.04], rel=1e-6)
    # r with combined: per seed np.corrcoef against the job's S(l), then a t-interval over the seeds
    for strategy in ("uniform", "proportional"):
        jobs = [j for j in active(rep.jobs) if j.strategy == strategy]
        for k, reward in enumerate(COMPONENTS[:2]):
            per_seed = [np.corrcoef(j.rewards.importance[k], j.grads.importance)[0, 1] for j in jobs]
            r = mean_row(rows, strategy, reward, "pearson_with_combined")
            lo, hi = sps.t.interval(0.95, 1, loc=np.mean(per_seed), scale=sps.sem(per_seed))
            lo, hi = max(lo, -1.0), min(hi, 1.0)  # a correlation's interval is cut to [-1, 1]
            assert float(r["value"]) == pytest.approx(np.mean(per_seed), rel=1e-9)
            assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((lo, hi), rel=1e-9)
        # the KL term is flat: no correlation, so no mean either
        assert all(r["value"] == "nan" for r in rows if (r["strategy"], r["reward"], r["statistic"])
                   == (strategy, "kl", "pearson_with_combined"))


def test_the_section_prints_the_csv_and_the_residual(built):
    _, out, rep = built
    md = rep.markdown
    section = md.split("## Per-reward gradient landscapes\n", 1)[1].split("\n## ")[0]
    assert f"![fig5]({FIG5})" in section and "top-30% share (k=2 of 6)" in section
    table = {tuple(c.strip() for c in line.strip("|").split("|"))[2:] for line in section.splitlines()
             if line.startswith("| synthetic")}
    cells = {(t[0], t[3]): t for t in table}  # (strategy, reward) -> the cells from strategy on
    assert cells[("uniform", "format")][4].startswith("100.000")
    assert cells[("uniform", "format")][-2:] == ("0-1", "none")
    assert cells[("proportional", "correctness")][-2:] == ("2-5", "0-5")
    assert cells[("uniform", "kl")][-3:] == ("n/a", "none", "none")
    # seeds 0 and 1 record 1e-7 (1 + seed): the largest is seed 1's
    assert re.search(r"train\.reward_split_residual\): 2e-07 \(`[^`]*_s1`\), the largest over 4 job\(s\)\.", section)
    assert "**layers dominated** by k (own share largest)" in md and "**norm share** of component k" in md
    assert md.rstrip().endswith(f"`capacity.csv`, `{REWARDS_CSV}`.")
    assert (out / FIG5).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_phase_when_no_training_phase_was_recorded(built, tmp_path):
    sweep, _, _ = built
    job_dir = next(sweep.glob("*_proportional_full_s0"))
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    cols = read_grad_records(copy / job_dir.name / REWARD_GRADS)
    keep = cols["phase"] == "profile"
    write_grad_records(copy / job_dir.name / REWARD_GRADS, {c: v[keep] for c, v in cols.items()}, tuple(cols))
    jobs, _ = rp.load([copy], progress=False)
    s = next(j for j in jobs if j.name == job_dir.name).rewards
    assert s.phase == "profile" and s.n_steps == 2
    hand = by_hand(copy / job_dir.name / REWARD_GRADS, "profile")
    for k, name in enumerate(COMPONENTS):
        np.testing.assert_allclose(s.importance[k], hand[name], rtol=1e-12)
    # the profile's planted landscapes are reversed: format drives the last two layers there
    assert np.argsort(s.importance[0])[-2:].tolist() in ([4, 5], [5, 4])
    np.testing.assert_array_equal(s.combined, read_cube(copy / job_dir.name / GRADS, "profile").layer_importance())
    md = render(ReportData(jobs, [], [copy], tables.table1_rows(jobs), stats_rows(jobs), [],
                           capacity_rows(capacity_points(jobs)), reward_rows(arms_of(jobs))))
    assert f"Profile phase (no training-phase records): {next(j.where for j in jobs if j.name == job_dir.name)}." in md


def test_strict_winners_leave_ties_and_nan_out():
    values = np.array([[0.5, 0.2, 0.3, np.nan],
                       [0.1, 0.2, 0.6, np.nan],
                       [np.nan, np.nan, np.nan, np.nan]])
    assert strict_winners(values) == [[0], [2], []]  # layer 1 is a tie, layer 3 has no shares


def without_reward_lines(md: str) -> list[str]:
    """report.md with the generation time, the per-reward section and its definitions taken out."""
    md = re.sub(r"Generated [^;]*;", "Generated <time>;", md)
    md = re.sub(r"## Per-reward gradient landscapes\n.*?(?=\n## )", "", md, flags=re.S)
    md = re.sub(r"- \*\*per-reward gradient components\*\*.*?(?=\n## )", "", md, flags=re.S)
    return md.replace(f", `{REWARDS_CSV}`", "").splitlines()


def test_a_sweep_without_the_records_reads_and_reports_as_before(built, tmp_path):
    """The same sweep written without reward_grads.parquet (the synthetic records draw no random numbers
    for it, so everything else is the same), reported into the same folder: every other file the same
    bytes, rewards.csv and Figure 5 gone, report.md the same but for its per-reward section's one line."""
    sweep, first, rep = built
    plain = tmp_path / "plain"
    make_sweep(plain, **SMALL)
    assert not list(plain.glob(f"*/{REWARD_GRADS}"))
    out = tmp_path / "out"  # the per-reward report's folder, copied: its rewards.csv and Figure 5 are stale
    shutil.copytree(first, out)
    # the same paths as the per-reward sweep (runs.csv names them): move it aside, the plain one in its place
    shutil.move(str(sweep), str(tmp_path / "with_rewards"))
    shutil.copytree(plain, sweep)
    try:
        again = rp.build([sweep], out, use_wandb=False, progress=False)
        assert all(j.rewards is None for j in again.jobs)
        assert not (out / REWARDS_CSV).exists() and not (out / FIG5).exists()
        for f in first.iterdir():
            if f.suffix == ".csv" and f.name != REWARDS_CSV:
                assert (out / f.name).read_bytes() == f.read_bytes(), f.name
        section = again.markdown.split("## Per-reward gradient landscapes\n", 1)[1].split("\n## ")[0]
        assert section.strip() == ("No job has per-reward gradient records (`reward_grads.parquet`): run the jobs "
                                   "with `profile.per_reward=true` to get them.")
        assert "per-reward gradient components" not in again.markdown
        assert without_reward_lines(again.markdown) == without_reward_lines(rep.markdown)
    finally:
        shutil.rmtree(sweep)
        shutil.move(str(tmp_path / "with_rewards"), str(sweep))


def test_a_job_without_the_file_joins_its_arm_with_the_seeds_that_have_it(built, tmp_path):
    sweep, _, _ = built
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    gone = next(copy.glob("*_uniform_full_s1"))
    (gone / REWARD_GRADS).unlink()
    jobs, notes = rp.load([copy], progress=False)
    assert next(j for j in jobs if j.name == gone.name).rewards is None
    assert not any(REWARD_GRADS in n for n in notes)
    rows = reward_rows(arms_of(jobs))
    assert {r["seed"] for r in rows if r["strategy"] == "uniform"} == {"s0", "mean"}
    assert mean_row(rows, "uniform", "format", "norm_share")["n"] == 1
    assert mean_row(rows, "uniform", "format", "dominated_layers")["value"] == "0 1"
    assert mean_row(rows, "proportional", "format", "norm_share")["n"] == 2


def test_an_unreadable_file_is_a_note(built, tmp_path):
    sweep, _, _ = built
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    broken = next(copy.glob("*_uniform_full_s0"))
    (broken / REWARD_GRADS).write_bytes(b"not parquet")
    jobs, notes = rp.load([copy], progress=False)
    job = next(j for j in jobs if j.name == broken.name)
    assert job.rewards is None and job.grads is not None
    assert any(n.startswith(f"{job.where}: unreadable {REWARD_GRADS}") for n in notes)


def test_the_records_are_the_real_format(built):
    """The synthetic file has reward_split.RewardGradients' columns and row layout: per step, per
    component, every matrix."""
    sweep, _, _ = built
    from grpo_rank.record.files import REWARD_COLUMNS

    table = pq.read_table(next(sweep.glob(f"*_uniform_full_s0/{REWARD_GRADS}")))
    assert tuple(table.column_names) == REWARD_COLUMNS
    per = L * MODULES * 2
    rewards = table.column("reward").to_pylist()
    assert [rewards[i * per] for i in range(len(COMPONENTS))] == COMPONENTS and len(rewards) == STEPS * 3 * per
