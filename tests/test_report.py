"""The report on a synthetic sweep whose answers are known by construction.

Job folders are written with the same writers the pipeline uses (records.py). The gradient norms are
built so that each statistic has a closed-form answer:
- uniform: module norm = U[l] * W[m] * scale, constant over steps, so S(l) is proportional to U
  (max/min exactly 2.0, top-30% share 6 / 13.5), the attention share is 4/10, and the early and late
  maps are equal (correlation 1);
- proportional: shares = uniform shares + K * (rank - mean rank), so the shift is exactly linear in the
  allocated rank (Pearson and Spearman 1);
- outcomes: proportional s0 vs uniform s0 has b = 1, c = 7 discordant questions, exact McNemar
  p = 2 * sum_{k<=1} C(8, k) / 2^8 = 0.0703125.

    python -m pytest tests/test_report.py -q
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from grpo_rank.analysis import report as rp
from grpo_rank.analysis import stats, stats_design
from grpo_rank.analysis.stats import wilson_interval
from grpo_rank.record.files import write_grad_records
from grpo_rank.record.result import Allocation, EvalSummary, JobIdentity, JobResult, Params, TrainInfo, write_result
from tests.conftest import read_csv

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
W = np.array([1, 1, 1, 1, 2, 2, 2], dtype=float)  # module weights: attention carries 4 / 10
U = np.array([1, 1, 1, 1, 1, 1, 1.5, 2, 2, 2])  # uniform importance: max/min 2, top 3 of 10 = 6 / 13.5
L, T, N_Q = len(U), 8, 40
PROP_RANKS = [4, 4, 4, 4, 8, 8, 8, 12, 12, 16]
K = 0.002
MODEL, TASK = "tiny", "arithmetic"


def share_of(x):
    return np.asarray(x, dtype=float) / np.sum(x)


PROP_SHARE = share_of(U) + K * (np.array(PROP_RANKS) - np.mean(PROP_RANKS))


def grad_columns(per_step_layer: np.ndarray, phase: str = "train", ranks=None) -> dict[str, np.ndarray]:
    """Records whose module norm is per_step_layer[t, l] * W[m]: A and B split 0.6 : 0.8 of it, so
    sqrt(A^2 + B^2) gives the module norm back."""
    cols = {c: [] for c in ("phase", "step", "layer", "module", "matrix", "norm", "rank", "scaling")}
    for t in range(per_step_layer.shape[0]):
        for l in range(per_step_layer.shape[1]):
            for m, mod in enumerate(MODULES):
                norm = per_step_layer[t, l] * W[m]
                for matrix, part in (("A", 0.6), ("B", 0.8)):
                    cols["phase"].append(phase)
                    cols["step"].append(t)
                    cols["layer"].append(l)
                    cols["module"].append(mod)
                    cols["matrix"].append(matrix)
                    cols["norm"].append(part * norm)
                    cols["rank"].append(ranks[l] if ranks else 8)
                    cols["scaling"].append(2.0)
    return {k: np.array(v) for k, v in cols.items()}


def outcomes_from(correct: set[int]) -> list[dict]:
    return [{"index": i, "id": f"q{i:03d}", "gold": str(i), "prediction": str(i) if i in correct else "x",
             "tagged": True, "parsed": True, "correct": i in correct} for i in range(N_Q)]


def write_job(sweep: Path, folder: str, strategy: str, seed: int, *, ranks=None, step_layer=None,
              correct: set[int] | None = None, status: str = "ok", error: str | None = None,
              profile: np.ndarray | None = None, budget: str = "full", fraction: float = 1.0) -> Path:
    d = sweep / folder
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"strategy={strategy}", f"seed={seed}"]))
    n_correct = len(correct or ())
    total = sum(ranks) if ranks else 0
    result = JobResult(
        status=status, error=error,
        job=JobIdentity(strategy=strategy, budget=budget, budget_fraction=fraction, seed=seed, model=MODEL,
                        task=TASK, group=f"{MODEL}-{TASK}-{strategy}-{budget}-abcd1234",
                        name=f"{strategy}-{budget}-s{seed}", config_hash="h", run_id=f"{strategy}{seed}"),
        config={"tracking": {"project": "grpo-rank-test", "entity": None, "mode": "auto"}},
        allocation=Allocation(ranks=list(ranks or []), total=total, budget_total=80, r_min=4, r_max=64, multiple=4,
                              num_layers=L, importance=None),
        params=Params(planned=total * 100, built=total * 100),
        train=TrainInfo(steps=T, nonzero_spread_fraction=0.5, importance=[0.0] * L) if ranks else None,
    )
    if status == "ok":
        lo, hi = wilson_interval(n_correct, N_Q)
        result.eval = EvalSummary(split="test", n=N_Q, correct=n_correct, accuracy=n_correct / N_Q, ci_low=lo,
                                  ci_high=hi, parse_failures=0, parse_failure_rate=0.0)
    write_result(d, result)
    if step_layer is not None:
        cols = grad_columns(step_layer, "train", ranks)
        if profile is not None:  # a profile phase the report must ignore
            prof = grad_columns(profile, "profile")
            cols = {k: np.concatenate([prof[k], cols[k]]) for k in cols}
        write_grad_records(d / "grad_norms.parquet", cols)
    if correct is not None:
        (d / "eval_outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes_from(correct)))
    return d


def multirun_yaml(sweep: Path, task_overrides: list[str], strategy: str) -> None:
    cfg = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                 "max_batch_size": None, "params": None},
                     "sweep": {"dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
                               "subdir": "${hydra.job.num}_${strategy.name}_${budget.name}_s${seed}"},
                     "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task_overrides}},
           "model": {"name": MODEL}, "task": {"name": TASK}, "strategy": {"name": strategy},
           "budget": {"name": "full", "fraction": 1.0}, "seed": 0}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(cfg))


def constant(map_: np.ndarray, scale: float) -> np.ndarray:
    return np.tile(np.asarray(map_, dtype=float) * scale, (T, 1))


def make_sweeps(root: Path) -> tuple[Path, Path]:
    """Sweep A: strategy=uniform,proportional,random x seed=0,1,2 with job 2 failed, job 5 without
    result.json and job 8 never started. Sweep B: the base model."""
    a = root / "multirun" / "2025-01-01" / "10-00-00"
    b = root / "multirun" / "2025-01-01" / "11-00-00"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    multirun_yaml(a, ["strategy=uniform,proportional,random", "seed=0,1,2"], "uniform")
    multirun_yaml(b, ["strategy=none"], "none")
    rng = np.random.default_rng(0)
    uni = [set(range(20)), set(range(22))]
    prop = [set(range(1, 27)), set(range(22))]  # s0: loses q0 (b = 1), gains q20..q26 (c = 7)
    for seed in (0, 1):
        scale = 0.1 * (1 + seed)  # seeds differ in gradient scale, not in shares
        write_job(a, f"{seed}_uniform_full_s{seed}", "uniform", seed, ranks=[8] * L,
                  step_layer=constant(U, scale), correct=uni[seed])
        write_job(a, f"{3 + seed}_proportional_full_s{seed}", "proportional", seed, ranks=PROP_RANKS,
                  step_layer=constant(PROP_SHARE, scale), correct=prop[seed],
                  profile=rng.uniform(0.5, 1.5, size=(3, L)))
        ranks = [int(r) for r in rng.permutation(PROP_RANKS)]
        write_job(a, f"{6 + seed}_random_full_s{seed}", "random", seed, ranks=ranks,
                  step_layer=rng.uniform(0.5, 2.0, size=(T, L)),
                  correct=set(rng.choice(N_Q, size=18, replace=False).tolist()))
    write_job(a, "2_uniform_full_s2", "uniform", 2, status="failed", error="RuntimeError: CUDA out of memory")
    (a / "5_proportional_full_s2" / ".hydra").mkdir(parents=True)
    (a / "5_proportional_full_s2" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["strategy=proportional", "seed=2"]))
    write_job(b, "0_none_full_s0", "none", 0, correct=set(range(10)))
    return a, b


def sd_p(d: list[int]) -> float:
    """The two-sided sign-flip p of d by enumerating its 2^n sign patterns."""
    import itertools

    sums = [abs(sum(s * v for s, v in zip(signs, d))) for signs in itertools.product((-1, 1), repeat=len(d))]
    return float(np.mean([x >= abs(sum(d)) for x in sums]))


def stat(rows, strategy, statistic, subset="all", seed="mean", budget="full") -> dict:
    found = [r for r in rows if r["strategy"] == strategy and r["statistic"] == statistic
             and r["subset"] == subset and r["seed"] == seed and r["budget"] == budget]
    assert len(found) == 1, (strategy, statistic, subset, seed, found)
    return found[0]


def clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home.mkdir(parents=True, exist_ok=True)
    # no API key and no ~/.netrc: resolve_mode('auto') goes offline, and W&B writes nothing outside tmp
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / "wandb-config"), WANDB_CACHE_DIR=str(home / "wandb-cache"),
               WANDB_DATA_DIR=str(home / "wandb-data"), WANDB_DIR=str(home / "wandb-dir"), PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    return make_sweeps(tmp_path_factory.mktemp("sweeps"))


@pytest.fixture(scope="module")
def cli_run(sweeps, tmp_path_factory):
    """The CLI end to end, as a user runs it, without W&B."""
    a, b = sweeps
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.report", str(a), str(b), "--no-wandb"],
                          capture_output=True, text=True, cwd=ROOT,
                          env=clean_env(tmp_path_factory.mktemp("home")), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return a / "report", proc


def test_cli_writes_every_file_and_prints_the_summary(cli_run):
    out, proc = cli_run
    for name in ("report.md", "table1.csv", "runs.csv", "stats.csv", "paired.csv", rp.FIG1, rp.FIG2):
        assert (out / name).is_file(), name
    assert "# grpo-rank report" in proc.stdout
    assert "Table 1" in proc.stdout
    assert "loading jobs" in proc.stderr  # the tqdm bar
    assert "W&B: skipped (--no-wandb)" in (out / "report.md").read_text()


def test_figures_are_real_pngs_with_content(cli_run):
    from matplotlib.image import imread

    out, _ = cli_run
    for name in (rp.FIG1, rp.FIG2):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(out / name)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert float(img[..., :3].std()) > 0.01, f"{name} is one flat colour"


def test_table1_has_one_row_per_strategy_and_budget(cli_run):
    out, _ = cli_run
    rows = read_csv(out / "table1.csv")
    keys = [(r["strategy"], r["budget"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {("none", "full"), ("uniform", "full"), ("proportional", "full"), ("random", "full")}
    by = {r["strategy"]: r for r in rows}
    assert [r["strategy"] for r in rows] == ["none", "uniform", "proportional", "random"]
    uni = by["uniform"]
    assert float(uni["accuracy_mean"]) == pytest.approx((20 + 22) / 2 / N_Q)
    # t-interval over seeds 0.5 and 0.55: mean +- t_{0.975, 1} * s / sqrt(2), s / sqrt(2) = 0.025
    assert float(uni["accuracy_ci95_high"]) - 0.525 == pytest.approx(12.706204736 * 0.025, rel=1e-6)
    assert uni["rank_range"] == "8-8"
    assert (uni["n_ok"], uni["n_failed"], uni["n_missing"]) == ("2", "1", "0")
    assert by["proportional"]["rank_range"] == "4-16"
    assert (by["proportional"]["n_ok"], by["proportional"]["n_missing"]) == ("2", "1")
    assert by["random"]["n_missing"] == "1"  # job 8, expected by multirun.yaml, never started
    base = by["none"]
    # the base model decodes greedily: one evaluation, with its Wilson interval, not a t-interval
    assert base["accuracy_per_seed"] == "s0 0.2500" and base["accuracy_interval"].startswith("Wilson (one evaluation")
    assert (float(base["accuracy_ci95_low"]), float(base["accuracy_ci95_high"])) == pytest.approx(
        wilson_interval(10, N_Q), rel=1e-12)
    assert base["n_questions"] == "40"
    # these outcome rows hold no replies and no judgement under both scorings: n/a, not a guess
    assert (base["accuracy_tagged_mean"], base["format_from"]) == ("nan", "n/a")
    assert "s0 [" in uni["wilson_per_run"] and "s1 [" in uni["wilson_per_run"]


def test_missing_and_failed_jobs_are_listed(cli_run):
    out, _ = cli_run
    md = (out / "report.md").read_text()
    section = md.split("## Missing and failed jobs")[1].split("## ")[0]
    assert "2_uniform_full_s2" in section and "RuntimeError: CUDA out of memory" in section
    assert "5_proportional_full_s2" in section and "no result.json" in section
    assert "8_(no folder)" in section and "never started" in section
    runs = read_csv(out / "runs.csv")
    status = {r["job"]: r["status"] for r in runs}
    assert status["2_uniform_full_s2"] == "failed"
    assert status["5_proportional_full_s2"] == "missing"
    assert status["8_(no folder)"] == "missing"
    assert [r["strategy"] for r in runs if r["job"] == "8_(no folder)"] == ["random"]


def test_concentration_statistics_match_the_construction(cli_run):
    out, _ = cli_run
    rows = read_csv(out / "stats.csv")
    assert float(stat(rows, "uniform", "max_min_ratio")["value"]) == pytest.approx(2.0, abs=1e-12)
    assert float(stat(rows, "uniform", "max_min_ratio", seed="s1")["value"]) == pytest.approx(2.0, abs=1e-12)
    # top 30% of 10 layers = 3 layers: 2 + 2 + 2 of 13.5 (not 4 layers: 0.3 * 10 is 3.0000000000000004)
    assert float(stat(rows, "uniform", "top30_share")["value"]) == pytest.approx(6 / 13.5, abs=1e-12)
    x = U / U.sum()
    gini = np.abs(x[:, None] - x[None, :]).sum() / (2 * L * L * x.mean())
    assert float(stat(rows, "uniform", "gini")["value"]) == pytest.approx(gini, abs=1e-12)
    assert float(stat(rows, "uniform", "cv")["value"]) == pytest.approx(U.std() / U.mean(), abs=1e-12)
    # the same map restricted to q_proj, whose shape is the same in every layer
    assert float(stat(rows, "uniform", "max_min_ratio", subset="q_proj")["value"]) == pytest.approx(2.0, abs=1e-12)
    assert float(stat(rows, "uniform", "top30_share", subset="down_proj")["value"]) == pytest.approx(6 / 13.5)
    # constant over steps: the early and late maps are equal
    el = stat(rows, "uniform", "early_late_pearson")
    assert float(el["value"]) == pytest.approx(1.0, abs=1e-12)
    assert "first 2 vs last 2 of 8 steps" in el["note"]


def test_module_shares_match_the_construction(cli_run):
    out, _ = cli_run
    rows = read_csv(out / "stats.csv")
    assert float(stat(rows, "uniform", "share_attention", "modules")["value"]) == pytest.approx(0.4)
    assert float(stat(rows, "uniform", "share_ffn", "modules")["value"]) == pytest.approx(0.6)
    assert float(stat(rows, "random", "share_q_proj", "modules")["value"]) == pytest.approx(0.1)
    assert float(stat(rows, "proportional", "share_gate_proj", "modules")["value"]) == pytest.approx(0.2)


def test_amplification_and_rank_shift_correlation(cli_run):
    out, _ = cli_run
    rows = read_csv(out / "stats.csv")
    for key in ("pearson", "spearman"):
        pooled = stat(rows, "proportional", f"rank_shift_{key}", seed="pooled")
        assert float(pooled["value"]) == pytest.approx(1.0, abs=1e-9)
        assert float(pooled["ci_low"]) == pytest.approx(1.0, abs=1e-9)
        assert pooled["n"] == "2"
        assert float(stat(rows, "proportional", f"rank_shift_{key}", seed="s0")["value"]) == pytest.approx(1.0, abs=1e-9)
    expected = (PROP_SHARE.max() / PROP_SHARE.min()) / 2.0
    amp = stat(rows, "proportional", "amplification_max_min")
    assert float(amp["value"]) == pytest.approx(expected, rel=1e-9)
    assert amp["note"] == "vs uniform/full"
    cv_ratio = (PROP_SHARE.std() / PROP_SHARE.mean()) / (U.std() / U.mean())
    assert float(stat(rows, "proportional", "amplification_cv")["value"]) == pytest.approx(cv_ratio, rel=1e-9)
    # random ranks and shifts are unrelated by construction: just defined, within [-1, 1]
    r = float(stat(rows, "random", "rank_shift_pearson", seed="pooled")["value"])
    assert -1 <= r <= 1


def test_paired_mcnemar_and_bootstrap(cli_run):
    out, _ = cli_run
    rows = read_csv(out / "paired.csv")
    row = next(r for r in rows if r["strategy"] == "proportional" and r["reference"] == "uniform/full"
               and r["seeds"] == "s0 vs s0")
    assert (row["b_reference_only"], row["c_strategy_only"], row["n_questions"]) == ("1", "7", "40")
    p = 18 / 256  # b + c = 8 discordant questions: 2 P(X <= 1), X ~ Binomial(8, 1/2) = 2 (1 + 8) / 2^8
    assert float(row["mcnemar_p"]) == pytest.approx(p, abs=1e-12)
    assert float(row["diff"]) == pytest.approx(6 / 40)
    # the interval is scipy's percentile bootstrap of the per-question differences, seed 0
    from scipy.stats import bootstrap

    d = np.zeros(N_Q)
    d[0], d[20:27] = -1, 1
    ci = bootstrap((d,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(0))
    assert (float(row["diff_low"]), float(row["diff_high"])) == pytest.approx(
        (ci.confidence_interval.low, ci.confidence_interval.high), rel=1e-12)
    assert float(row["p_value"]) == float(row["mcnemar_p"]) and row["test"] == "exact McNemar"
    assert float(row["mde80"]) == pytest.approx(stats_design.min_detectable_difference(40, 8 / 40))
    same = next(r for r in rows if r["strategy"] == "proportional" and r["reference"] == "uniform/full"
                and r["seeds"] == "s1 vs s1")
    assert float(same["mcnemar_p"]) == 1.0 and float(same["diff"]) == 0.0
    # no pooled McNemar over seed pairs (they share their questions): across them, d_q = mean over pairs
    assert not [r for r in rows if r["seeds"].startswith("pooled")]
    across = next(r for r in rows if r["strategy"] == "proportional" and r["reference"] == "uniform/full"
                  and r["seeds"] == "across 2 seed pairs")
    assert (across["b_reference_only"], across["c_strategy_only"], across["mcnemar_p"], across["n_pairs"]) == (
        "", "", "", "2")
    assert float(across["diff"]) == pytest.approx(6 / 40 / 2)
    # s0 loses q0 and gains q20..q26, s1 the same as uniform: d_q = -1/2 once, +1/2 seven times
    assert float(across["p_value"]) == pytest.approx(sd_p([-1] + [1] * 7), rel=1e-12)
    assert across["test"] == "sign-flip permutation over questions (exact)"
    assert float(across["discordance"]) == pytest.approx(8 * 0.25 / 40)
    assert float(across["diff_low"]) < 6 / 80 < float(across["diff_high"])
    # the seed-level t-interval of the per-seed differences 0.15 and 0
    assert (float(across["seed_t_low"]), float(across["seed_t_high"])) == pytest.approx(
        stats.t_interval([0.15, 0.0])[1:], rel=1e-12)
    # vs the base model: its one evaluation serves every seed
    base = [r for r in rows if r["strategy"] == "uniform" and r["reference"] == "none (base model)"]
    assert {r["seeds"] for r in base} == {"s0 vs s0", "s1 vs s0", "across 2 seed pairs"}
    s0 = next(r for r in base if r["seeds"] == "s0 vs s0")
    assert (s0["b_reference_only"], s0["c_strategy_only"]) == ("0", "10")
    assert not [r for r in rows if r["strategy"] == "none"]


def test_report_md_defines_statistics_and_names_wandb_panels(cli_run):
    out, _ = cli_run
    md = (out / "report.md").read_text()
    for text in ("## Definitions", "round(0.3 L)", "max_l S(l) / min_l S(l)", "McNemar", "Which W&B panels to open",
                 "grad_share/layer_XX", "grad_norm/layer_XX", "grad_share_module/<proj>", "eval/accuracy",
                 "eval/ci_low", "`strategy` config key", rp.FIG1, rp.FIG2):
        assert text in md, text


def test_expected_jobs_follow_hydras_basic_sweeper(sweeps):
    a, _ = sweeps
    expected, why = rp.expected_jobs(a)
    assert why == ""
    assert [(e["overrides"]["strategy"], e["overrides"]["seed"]) for e in expected] == [
        (s, str(n)) for s in ("uniform", "proportional", "random") for n in range(3)]


def test_partial_sweep_without_multirun_yaml(sweeps, tmp_path):
    """Only job folders: the unfinished one is still listed, labelled from its folder name."""
    a, _ = sweeps
    part = tmp_path / "partial"
    part.mkdir()
    shutil.copytree(a / "0_uniform_full_s0", part / "0_uniform_full_s0")
    (part / "1_proportional_full_s0").mkdir()
    rep = rp.build([part], tmp_path / "out", use_wandb=False, progress=False)
    missing = [j for j in rep.jobs if j.status == "missing"]
    assert [(j.name, j.strategy, j.seed, j.model) for j in missing] == [("1_proportional_full_s0", "proportional", 0, MODEL)]
    assert "1_proportional_full_s0" in rep.markdown
    rows = read_csv(tmp_path / "out" / "table1.csv")
    assert [(r["strategy"], r["n_ok"], r["n_missing"]) for r in rows] == [("uniform", "1", "0"), ("proportional", "0", "1")]


def test_a_rerun_in_a_later_sweep_supersedes_the_failed_job(sweeps, tmp_path):
    a, _ = sweeps
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    write_job(rerun, "0_uniform_full_s2", "uniform", 2, ranks=[8] * L, step_layer=constant(U, 0.3),
              correct=set(range(21)))
    rep = rp.build([a, rerun], tmp_path / "out", use_wandb=False, progress=False)
    failed = next(j for j in rep.jobs if j.name == "2_uniform_full_s2")
    assert failed.superseded_by and failed.superseded_by.endswith("rerun/0_uniform_full_s2")
    uni = next(r for r in read_csv(tmp_path / "out" / "table1.csv") if r["strategy"] == "uniform")
    assert uni["seeds"] == "s0 s1 s2" and uni["n_failed"] == "0"


def test_wandb_offline_run_can_be_read_back(sweeps, tmp_path):
    a, b = sweeps
    out = tmp_path / "wandb_report"
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.report", str(a), str(b), "--out", str(out),
                           "--wandb-report"],
                          capture_output=True, text=True, cwd=ROOT, env=clean_env(tmp_path / "home"), timeout=180)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "W&B: offline run" in md, md.split("## W&B")[-1]
    # --wandb-report offline builds the dashboard's spec but cannot save it, and says so in one line
    if importlib.util.find_spec("wandb_workspaces") is None:
        assert "W&B dashboard: skipped, the wandb-workspaces package is not installed" in md
    else:
        assert "W&B dashboard: spec written to `wandb_report.json`, not saved: W&B mode is offline" in md
        assert json.loads((out / "wandb_report.json").read_text())["spec"]["blocks"]
    files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(out.rglob("*"))
    wandb_bin = Path(sys.executable).with_name("wandb")
    inspect = subprocess.run([str(wandb_bin), "leet", "inspect", "--json", str(files[0])], capture_output=True,
                             text=True, env=clean_env(tmp_path / "home"), timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.strip().startswith("{")]
    types = {r.get("type") for r in records}
    assert types & {"history", "summary"}, types
    text = inspect.stdout
    assert "report/table1" in text and "report/fig1_uniform_grad_share" in text
    summary = {}
    for r in records:
        if r.get("type") == "summary":
            summary.update(r["summary"].get("update") or {})
    assert summary["accuracy/uniform_full"] == pytest.approx(0.525)
    assert summary["max_min_ratio/uniform_full"] == pytest.approx(2.0)
    run = next(r["run"] for r in records if r.get("type") == "run")
    assert run["job_type"] == "report" and run["project"] == "grpo-rank-test"
    # the jobs' groups are per strategy x budget, so the report gets a group named after its sweep
    assert run["run_group"] == "sweep-2025-01-01-10-00-00"


def test_a_wandb_failure_does_not_fail_the_report(sweeps, tmp_path):
    """A real failure, not a mock: W&B cannot create its folder because a file is in the way."""
    a, _ = sweeps
    out = tmp_path / "blocked"
    out.mkdir()
    (out / "wandb").write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.report", str(a), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=clean_env(tmp_path / "home"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "W&B: not logged" in md
    assert (out / "table1.csv").is_file() and (out / rp.FIG2).is_file()


GOLDEN = ROOT / "tests" / "golden" / "report_tables.json"


def golden_scenarios(root: Path) -> dict[str, list[Path]]:
    """The sweeps whose tables tests/golden/report_tables.json holds, as computed by the report before
    it became a package (grpo_rank/report.py at e72c1ca): the known-answer sweeps above, a synthetic
    sweep with a failed, an unfinished and a never-started job and profile-phase rows, and one with 5
    seeds (the seed bootstrap then draws at random)."""
    from tests.synthetic import make_sweep

    a, b = make_sweeps(root / "known")
    small = make_sweep(root / "synthetic" / "multirun" / "2025-02-02" / "12-00-00", jobs=8, steps=12, layers=6,
                       modules=4, n_questions=30, profile_steps=3, failed=(2,), unfinished=(5,))
    seeds = make_sweep(root / "seeds" / "multirun" / "2025-02-03" / "08-00-00", jobs=10, steps=6, layers=5,
                       modules=2, n_questions=20, strategies=("uniform", "random"))
    return {"known": [a, b], "synthetic": [small], "five_seeds": [seeds]}


def normalised(value, root: Path):
    """A table cell or markdown with the temporary root and the generation time taken out."""
    if isinstance(value, str):
        value = value.replace(str(root), "<root>")
        if value.startswith("Generated "):
            value = "Generated <time>" + value[value.index(";"):]
        return value
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def same(new, old, where: str) -> None:
    """Equal, floats to 12 significant digits (the grouped sums may differ in the last bit), NaN == NaN."""
    if isinstance(old, float) and isinstance(new, (float, int)) and not isinstance(new, bool):
        assert (math.isnan(old) and math.isnan(new)) or new == pytest.approx(old, rel=1e-12, abs=1e-15), where
    else:
        assert new == old and type(new) is type(old), f"{where}: {new!r} != {old!r}"


ADDED = ("algorithm", "r", "steps")  # the arm fields added since the golden (jobs.Arm)


def without_added(rows: list[dict], where: str) -> list[dict]:
    """The rows without the columns added since the golden, once every row is seen to hold them with
    one value across the scenario: algorithm the default, dapo; r and steps the sweep's one lora.r and
    grpo.steps, and none for the base model (None in an arm's columns, "" in runs.csv's)."""
    assert all(c in r for r in rows for c in ADDED), where
    assert {r["algorithm"] for r in rows} <= {"dapo"}, where
    assert len({r["r"] for r in rows if r["strategy"] != "none"}) <= 1, where
    assert {r["r"] for r in rows if r["strategy"] == "none"} <= {None, ""}, where
    assert len({r["steps"] for r in rows if r["strategy"] != "none"}) <= 1, where  # grpo.steps likewise
    assert {r["steps"] for r in rows if r["strategy"] == "none"} <= {None, ""}, where
    # the scorer column of Table 1 and runs.csv (eval.scoring): every golden job was scored by `any`
    assert {r["scoring"] for r in rows if "scoring" in r} <= {"any", ""}, where
    return [{k: v for k, v in r.items() if k not in (*ADDED, "scoring")} for r in rows]


@pytest.mark.parametrize("scenario", ["known", "synthetic", "five_seeds"])
def test_tables_equal_those_of_the_report_before_the_package(scenario, tmp_path_factory):
    from grpo_rank.analysis.report import gradstats, tables
    from grpo_rank.analysis.report.capacity import capacity_points, capacity_rows
    from grpo_rank.analysis.report.jobs import arms_of
    from grpo_rank.analysis.report.markdown import ReportData, render
    from grpo_rank.analysis.report.rewards import reward_rows

    root = tmp_path_factory.getbasetemp() / "golden"
    if not root.exists():
        golden_scenarios(root)
    expected = json.loads(GOLDEN.read_text())["scenarios"][scenario]
    sweeps = {"known": [root / "known" / "multirun" / "2025-01-01" / "10-00-00",
                        root / "known" / "multirun" / "2025-01-01" / "11-00-00"],
              "synthetic": [root / "synthetic" / "multirun" / "2025-02-02" / "12-00-00"],
              "five_seeds": [root / "seeds" / "multirun" / "2025-02-03" / "08-00-00"]}[scenario]
    jobs, notes = rp.load(sweeps, progress=False)
    got = {"table1": tables.table1_rows(jobs), "runs": tables.run_rows(jobs), "stats": gradstats.stats_rows(jobs),
           "paired": tables.paired_rows(jobs)}
    for name, rows in got.items():
        cols = expected[name]
        rows = without_added(rows, name)
        assert [list(r) for r in rows[:1]] == [list(cols)], name  # the same columns in the same order
        assert len(rows) == len(next(iter(cols.values()), [])), name
        for i, r in enumerate(rows):
            for c, v in r.items():
                same(normalised(v, root), cols[c][i], f"{name}[{i}].{c}")
    assert [normalised(n, root) for n in notes] == expected["notes"]
    if "markdown" in expected:
        md = render(ReportData(jobs, notes, sweeps, got["table1"], got["stats"], got["paired"],
                               capacity_rows(capacity_points(jobs)), reward_rows(arms_of(jobs))))
        assert [normalised(line, root) for line in md.splitlines()] == expected["markdown"]


def test_job_folders_named_from_overrides_read_like_numbered_ones(tmp_path):
    """Jobs are known by their records, so the folder layout changes nothing but the folder names."""
    from grpo_rank.analysis.report import gradstats, tables
    from tests.synthetic import make_sweep

    kw = dict(jobs=5, steps=4, layers=4, modules=2, n_questions=10, failed=(1,), unfinished=(3,))
    loaded = {}
    for layout in ("numbered", "overrides"):
        sweep = make_sweep(tmp_path / layout / "multirun" / "d" / "t", layout=layout, **kw)
        loaded[layout] = rp.load([sweep], progress=False)
    (num, num_notes), (ovr, ovr_notes) = loaded["numbered"], loaded["overrides"]
    assert num_notes == ovr_notes == []
    assert "seed-0_strategy-uniform" in {j.name for j in ovr}
    for f in (tables.table1_rows, gradstats.stats_rows, tables.paired_rows):
        assert repr(f(num)) == repr(f(ovr)), f.__name__
    status = lambda jobs: sorted((j.strategy, j.seed, j.status, j.detail) for j in jobs)  # noqa: E731
    assert status(num) == status(ovr)
    # 3 strategies x 2 seeds expected; job 1 failed, job 3 killed, job 5 never started
    assert [(j.strategy, j.seed, j.status) for j in ovr if j.status != "ok"] == [
        ("uniform", 1, "failed"), ("proportional", 1, "missing"), ("random", 1, "missing")]
    assert [j.name for j in ovr if j.status == "missing"] == ["seed-1_strategy-proportional", "5_(no folder)"]


def test_an_unreadable_record_is_a_note_and_skipped(sweeps, tmp_path):
    a, _ = sweeps
    part = tmp_path / "sweep"
    shutil.copytree(a / "0_uniform_full_s0", part / "0_uniform_full_s0")
    shutil.copytree(a / "1_uniform_full_s1", part / "1_uniform_full_s1")
    record = json.loads((part / "1_uniform_full_s1" / "result.json").read_text())
    record["schema_version"] = 99
    (part / "1_uniform_full_s1" / "result.json").write_text(json.dumps(record))
    jobs, notes = rp.load([part], progress=False)
    assert [j.name for j in jobs] == ["0_uniform_full_s0"]
    assert len(notes) == 1 and notes[0].startswith("unreadable: ") and "schema version 99" in notes[0]
    assert "\n" not in notes[0]


@pytest.mark.parametrize("args", [
    ["strategy=uniform,proportional,random", "seed=0,1,2"],
    ["model=tiny", "+lora.r=4,8", "seed=0,1", "budget.fraction=0.5,1.0"],
    ["seed=range(0,3)", "strategy=uniform,random"],  # not plain: Hydra's own parser
    ["hydra/launcher=joblib", "strategy=none", "lora.target_modules=[q_proj,v_proj]", "seed=0,1"],
    ["strategy=proportional,uniform,random", "seed=0,1"],  # the default sweeper moves proportional last
])
@pytest.mark.parametrize("sweeper", ["hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                     "hydra_plugins.grpo_rank_sweeper.ordered.OrderedSweeper"])
def test_expected_jobs_equal_what_the_sweeper_launches(args, sweeper, tmp_path):
    """Any override syntax, under Hydra's basic sweeper and under the default one, which launches the jobs
    that read a profile last: the report and the status expect the jobs in the order Hydra numbers them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import get_class

    from grpo_rank.sweep import layout

    cfg = {"hydra": {"sweeper": {"_target_": sweeper, "params": None}, "overrides": {"task": args}}}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(cfg))
    expected, why = rp.expected_jobs(tmp_path)
    assert why == ""
    launched = get_class(sweeper).split_arguments(OverridesParser.create().parse_overrides(args), None)[0]
    assert [e["overrides"] for e in expected] == [layout.parse_overrides(ovs) for ovs in launched]


# --- the scaling artefact: synthetic sweeps whose scaling slope is planted -----------------------

PLANTED = {"fixed": -0.5, "rslora": 0.0, "per_rank": 0.5}  # log-log slope of norm vs rank that s(r) sqrt(r) gives


@pytest.fixture(scope="module")
def scaling_sweep(tmp_path_factory):
    """uniform and proportional x fixed, rslora, per_rank x 3 seeds, 28 layers, W rows; only the scaling
    moves the norms (no amplification planted), little noise."""
    from tests.synthetic import make_sweep

    sweep = make_sweep(tmp_path_factory.mktemp("scaling") / "multirun" / "d" / "t", jobs=18, steps=6, layers=28,
                       modules=7, n_questions=20, strategies=("uniform", "proportional"),
                       alpha_modes=tuple(PLANTED), full_weight=True, noise=0.05)
    return rp.build([sweep], sweep / "report", use_wandb=False, progress=False)


@pytest.fixture(scope="module")
def amplified_sweep(tmp_path_factory):
    """fixed alpha with a real rank effect planted beyond the scaling: norms also grow as (r / r0)^0.5."""
    from tests.synthetic import make_sweep

    sweep = make_sweep(tmp_path_factory.mktemp("amplified") / "multirun" / "d" / "t", jobs=6, steps=6, layers=28,
                       modules=3, n_questions=20, strategies=("uniform", "proportional"), alpha_modes=("fixed",),
                       full_weight=True, noise=0.05, amplification=0.5)
    return rp.build([sweep], sweep / "report", use_wandb=False, progress=False)


def mode_stat(rows, mode, statistic, seed="mean", strategy="proportional", subset="all") -> dict:
    found = [r for r in rows if (r["alpha_mode"], r["strategy"], r["statistic"], r["seed"], r["subset"])
             == (mode, strategy, statistic, seed, subset)]
    assert len(found) == 1, (mode, statistic, seed, found)
    return found[0]


@pytest.mark.parametrize("mode", list(PLANTED))
def test_the_planted_scaling_slope_is_recovered(scaling_sweep, mode):
    rows = read_csv(scaling_sweep.out / "stats.csv")
    for statistic in ("scaling_slope_init", "scaling_slope"):
        for seed in ("s0", "s1", "s2"):
            r = mode_stat(rows, mode, statistic, seed)
            assert float(r["value"]) == pytest.approx(PLANTED[mode], abs=0.05), (statistic, seed)
            assert 0 < float(r["ci_high"]) - float(r["ci_low"]) < 0.1  # an OLS interval over 28 layers, not a point
            assert r["n"] == "28" and f"predicted at init {PLANTED[mode]:g} (alpha_mode={mode})" in r["note"]
        mean = mode_stat(rows, mode, statistic)
        assert float(mean["value"]) == pytest.approx(PLANTED[mode], abs=0.03)
        assert float(mean["ci_low"]) < PLANTED[mode] < float(mean["ci_high"])
    # the full-weight signal has no scaling: slope 0 whatever the alpha mode
    for statistic in ("scaling_slope_full_weight_init", "scaling_slope_full_weight"):
        assert float(mode_stat(rows, mode, statistic)["value"]) == pytest.approx(0.0, abs=0.03)
    # uniform runs are the reference: no slope of their own
    assert not [r for r in rows if r["strategy"] == "uniform" and r["statistic"].startswith("scaling_slope")]


def test_only_scaling_moving_norms_gives_no_normalised_rank_shift(scaling_sweep):
    rows = read_csv(scaling_sweep.out / "stats.csv")
    raw = {m: float(mode_stat(rows, m, "rank_shift_pearson", "pooled")["value"]) for m in PLANTED}
    # the artefact on raw norms: against the ranks with fixed alpha, with them with per_rank, ~0 with rsLoRA
    assert raw["fixed"] < -0.9 and raw["per_rank"] > 0.9 and abs(raw["rslora"]) < 0.35
    for m in PLANTED:  # 3 seeds x 28 layers of noise: |r| < 0.35 is ~3 standard errors
        for view in ("_normalised", "_full_weight"):
            assert abs(float(mode_stat(rows, m, f"rank_shift_pearson{view}", "pooled")["value"])) < 0.35, (m, view)
        # amplification: fixed alpha flattens the raw map (< 1), per_rank steepens it; normalised ~1
        assert float(mode_stat(rows, m, "amplification_max_min_normalised")["value"]) == pytest.approx(1, abs=0.1)
    assert float(mode_stat(rows, "fixed", "amplification_max_min")["value"]) < 0.9
    assert float(mode_stat(rows, "per_rank", "amplification_max_min")["value"]) > 1.3


def test_a_real_rank_effect_survives_normalisation(amplified_sweep):
    rows = read_csv(amplified_sweep.out / "stats.csv")
    # fixed alpha's -1/2 and the planted +1/2 cancel on raw LoRA norms; the full weight sees the +1/2 alone
    assert float(mode_stat(rows, "fixed", "scaling_slope_init")["value"]) == pytest.approx(0.0, abs=0.05)
    assert float(mode_stat(rows, "fixed", "scaling_slope_full_weight")["value"]) == pytest.approx(0.5, abs=0.05)
    for view in ("_normalised", "_full_weight"):
        assert float(mode_stat(rows, "fixed", f"rank_shift_pearson{view}", "pooled")["value"]) > 0.9
    head = amplified_sweep.markdown.split("## Headline")[1].split("## Table 1")[0]
    assert "Beyond scaling: a positive rank-shift correlation remains, above its no-effect null (scaling-normalised r" in head


def test_the_headline_prints_the_computed_values(scaling_sweep):
    rows = read_csv(scaling_sweep.out / "stats.csv")
    head = scaling_sweep.markdown.split("## Headline")[1].split("## Table 1")[0]
    bullets = [line for line in head.splitlines() if line.startswith("- **proportional/full")]
    assert len(bullets) == 3  # one per alpha mode
    for mode, line in zip(PLANTED, bullets):
        assert ("alpha_mode=" in line.split("**")[1]) == (mode != "fixed")
        for view, name in (("", "raw"), ("_normalised", "scaling-normalised"), ("_full_weight", "full-weight")):
            r = mode_stat(rows, mode, f"rank_shift_pearson{view}", "pooled")
            assert (f"{float(r['value']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}] {name}"
                    in line), (mode, view, line)
            amp = mode_stat(rows, mode, f"amplification_max_min{view}")
            assert f"{float(amp['value']):.3f} [" in line
        assert f"(predicted {PLANTED[mode]:g} for alpha_mode={mode})" in line
        # only scaling moves these norms: the rank-invariant views' r lie within their no-effect null
        assert "Beyond scaling: no rank-shift correlation is resolved: within its no-effect null (scaling-normalised r" in line
        assert "n/a" not in line


def test_arms_split_by_alpha_mode_and_compare_within_it(scaling_sweep):
    t1 = read_csv(scaling_sweep.out / "table1.csv")
    assert [(r["strategy"], r["alpha_mode"]) for r in t1] == [(s, m) for s in ("uniform", "proportional")
                                                              for m in PLANTED]
    assert all(r["signal"] == "lora" and r["n_ok"] == "3" for r in t1)
    rows = read_csv(scaling_sweep.out / "stats.csv")
    assert mode_stat(rows, "fixed", "rank_shift_pearson", "pooled")["note"].startswith("vs uniform/full;")
    assert mode_stat(rows, "rslora", "rank_shift_pearson", "pooled")["note"].startswith(
        "vs uniform/full (alpha_mode=rslora);")
    paired = read_csv(scaling_sweep.out / "paired.csv")
    assert {(r["alpha_mode"], r["reference"]) for r in paired} == {
        ("fixed", "uniform/full"), ("rslora", "uniform/full (alpha_mode=rslora)"),
        ("per_rank", "uniform/full (alpha_mode=per_rank)")}
    # Table 1 in markdown shows the alpha mode (it varies); the known sweep's does not (all at the default)
    assert "| model | task | strategy | budget | alpha mode | ranks |" in scaling_sweep.markdown


def test_same_shape_statistics_are_on_normalised_norms(scaling_sweep):
    rows = read_csv(scaling_sweep.out / "stats.csv")
    # fixed alpha: the raw map is flattened by the scaling, each projection's normalised map is uniform's
    for proj in ("q_proj", "down_proj"):
        uni = float(mode_stat(rows, "fixed", "max_min_ratio", strategy="uniform", subset=proj)["value"])
        prop = float(mode_stat(rows, "fixed", "max_min_ratio", subset=proj)["value"])
        assert prop == pytest.approx(uni, rel=0.1)
    raw = float(mode_stat(rows, "fixed", "max_min_ratio")["value"])
    assert raw < 0.9 * float(mode_stat(rows, "fixed", "max_min_ratio", strategy="uniform")["value"])


def test_known_sweep_prints_k_the_normal_half_width_and_no_full_weight(cli_run):
    out, _ = cli_run
    md = (out / "report.md").read_text()
    assert "top-30% share (k=3 of 10)" in md
    assert "alpha mode" not in md.split("## Table 1")[1].split("\n\n")[1]  # all at the default: not shown
    t1 = {r["strategy"]: r for r in read_csv(out / "table1.csv")}
    half = lambda k: 100 * 1.959963984540054 * math.sqrt(k / N_Q * (1 - k / N_Q) / N_Q)  # noqa: E731
    assert t1["uniform"]["normal_half_width_per_run"] == f"s0 ±{half(20):.2f}; s1 ±{half(22):.2f}"
    runs = {r["job"]: r for r in read_csv(out / "runs.csv")}
    assert float(runs["0_uniform_full_s0"]["normal_half_width"]) == pytest.approx(half(20) / 100)
    head = md.split("## Headline")[1].split("## Table 1")[0]
    assert "n/a (no full-weight records) full-weight" in head
    rows = read_csv(out / "stats.csv")
    assert not [r for r in rows if "full_weight" in r["statistic"]]
    assert stat(rows, "uniform", "top30_share", seed="s0")["note"] == "k=3 of 10 layers"


def test_definitions_state_the_predictions_and_the_normalisation(cli_run):
    out, _ = cli_run
    defs = " ".join((out / "report.md").read_text().split("## Definitions")[1].split())  # lines rejoined
    for text in ("fixed -1/2, rslora 0, per_rank +1/2", "*falls* as the rank grows", "s(r0) sqrt(r0) / (s(r) sqrt(r))",
                 "x(l) = log(r(l) / r_uniform(l))", "n - 2 degrees of freedom", "first recorded training step",
                 "1.96 sqrt(p (1 - p) / n)", "k = round(0.3 L)", "Gini on one projection type at a time (the same weight "
                 "shape in every layer), on scaling-normalised norms"):
        assert text in defs, text
    assert "grows with rank" not in defs and "gradient norm grows" not in defs


def test_arm_of_and_the_uniform_reference():
    """The signal does not split runs that read no profile; the base model has no alpha mode."""
    from grpo_rank.analysis.report.jobs import Arm, Job, uniform_reference

    def job(strategy, alpha_mode="fixed", signal="lora"):
        return Job(sweep=Path("."), name="x", status="ok", strategy=strategy, budget="full", model=MODEL, task=TASK,
                   alpha_mode=alpha_mode, signal=signal)

    assert job("uniform", "rslora", "full_weight").arm == Arm(MODEL, TASK, "uniform", "full", "rslora", "lora")
    assert job("random", signal="full_weight").arm.signal == "lora"
    assert job("none", "per_rank").arm.alpha_mode == "fixed"
    prop = job("proportional", "rslora", "full_weight").arm
    assert prop.signal == "full_weight"
    arms = {a: [] for a in (Arm(MODEL, TASK, "uniform", "full"), Arm(MODEL, TASK, "uniform", "full", "rslora"), prop)}
    assert uniform_reference(arms, prop) == Arm(MODEL, TASK, "uniform", "full", "rslora")
    assert uniform_reference({prop: [], Arm(MODEL, TASK, "uniform", "full"): []}, prop) is None  # never across modes
    # but per_rank at uniform rank is fixed alpha, the same model: its own uniform runs first, else the fixed ones
    per_rank = job("proportional", "per_rank").arm
    fixed_u, per_rank_u = Arm(MODEL, TASK, "uniform", "full"), Arm(MODEL, TASK, "uniform", "full", "per_rank")
    assert uniform_reference({per_rank: [], fixed_u: [], per_rank_u: []}, per_rank) == per_rank_u
    assert uniform_reference({per_rank: [], fixed_u: []}, per_rank) == fixed_u
    assert uniform_reference({prop: [], fixed_u: [], per_rank_u: []}, prop) is None  # rslora is another model


def test_records_and_unstarted_jobs_say_their_alpha_mode(tmp_path):
    from grpo_rank.analysis.report import discover
    from tests.synthetic import make_sweep

    # an older record's lora.use_rslora: true reads as alpha_mode rslora
    d = write_job(tmp_path / "old", "0_uniform_full_s0", "uniform", 0, ranks=[8] * L, correct=set())
    record = json.loads((d / "result.json").read_text())
    record["config"]["lora"] = {"r": 8, "alpha": 16, "use_rslora": True}
    (d / "result.json").write_text(json.dumps(record))
    (job,), _ = rp.find_jobs(d.parent)
    assert (job.alpha_mode, job.r_uniform, job.alpha, job.arm.alpha_mode) == ("rslora", 8, 16.0, "rslora")
    # a sweep over lora.alpha_mode with one job killed and one never started, folders named from overrides
    sweep = make_sweep(tmp_path / "s" / "multirun" / "d" / "t", jobs=6, steps=2, layers=4, modules=2, n_questions=5,
                       strategies=("uniform",), alpha_modes=("fixed", "rslora", "per_rank"), layout="overrides",
                       unfinished=(3, 5))
    assert (sweep / "lora.alpha_mode-rslora_seed-0_strategy-uniform" / "result.json").is_file()
    jobs, notes = discover.load([sweep], progress=False)
    missing = sorted((j.alpha_mode, j.seed) for j in jobs if j.status == "missing")
    assert missing == [("per_rank", 1), ("rslora", 1)] and notes == []
    rp.build([sweep], tmp_path / "out", use_wandb=False, progress=False)
    rows = {r["alpha_mode"]: (r["n_ok"], r["n_missing"]) for r in read_csv(tmp_path / "out" / "table1.csv")}
    assert rows == {"fixed": ("2", "0"), "rslora": ("1", "1"), "per_rank": ("1", "1")}

