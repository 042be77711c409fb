"""`python -m grpo_rank.run` as a user runs it: a real Hydra multirun of the tiny model into a temp dir
(3 strategies x 2 seeds), one typed record per job in a folder named by its swept keys, the offline
W&B runs read back with `wandb leet inspect --json`, a dry run, and the cross-run report built from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.allocation.importance import layer_importance
from grpo_rank.profiling.cache import ProfileCache
from grpo_rank.record.files import read_grad_records, read_jsonl
from grpo_rank.record.result import read_result
from tests.conftest import ONE_THREAD, TINY, TINY_STRATEGIES, copy_tiny_sweep, jobs_by_arm, run_cli, wandb_records

STRATEGIES = TINY_STRATEGIES


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    return tiny_sweep


def job_dirs(sweep_dir: Path, seed: int = 0) -> dict[str, Path]:
    return {strategy: path for (strategy, _, s), path in jobs_by_arm(sweep_dir).items() if s == seed}


def test_one_record_per_job_in_a_folder_named_by_its_swept_keys(sweep):
    sweep_dir, _ = sweep
    assert sorted(p.parent.name for p in sweep_dir.glob("*/result.json")) == sorted(
        f"seed-{seed}_strategy-{s}" for s in STRATEGIES for seed in (0, 1))
    jobs = job_dirs(sweep_dir)
    assert sorted(jobs) == sorted(STRATEGIES)
    for path in jobs.values():
        res = read_result(path)
        assert res.status == "ok", res.error
        assert res.allocation.total == res.allocation.budget_total == 8 * 12
        assert res.params.built == res.params.planned > 0
        assert 0.0 <= res.eval.ci_low <= res.eval.accuracy <= res.eval.ci_high <= 1.0
        assert res.eval.n == 8 and len(read_jsonl(path / "eval_outcomes.jsonl")) == 8
        assert res.eval.generation["repetition_penalty"] == 1.0 and res.eval.generation["do_sample"] is False
        # both scorings and the well-formed fraction, whatever eval.scoring counted
        rows = read_jsonl(path / "eval_outcomes.jsonl")
        by_scoring = {"tagged": res.eval.accuracy_tagged, "any": res.eval.accuracy_any}
        assert res.eval.accuracy == by_scoring[res.eval.generation["scoring"]]
        assert res.eval.well_formed_fraction == np.mean([r["well_formed"] for r in rows])
        assert res.eval.accuracy_tagged <= res.eval.accuracy_any
        assert res.job.seed == 0 and "seed" not in res.job.group
        assert (path / "grad_norms.parquet").exists() and (path / "train_log.jsonl").exists()
        assert res.train.nonzero_spread_fraction is not None
        assert res.runtime.threads >= 1 and res.runtime.code_version


def test_the_uniform_job_is_the_profile_computed_once(sweep):
    """profile.steps == grpo.steps (TINY): each seed's uniform job published its training records as the
    profile; that seed's proportional job read them (no second computation: the cache counted one per
    seed, by the uniform job) and allocated from exactly the uniform job's S(l)."""
    sweep_dir, _ = sweep
    for seed in (0, 1):
        jobs = job_dirs(sweep_dir, seed)
        uni, prop = read_result(jobs["uniform"]), read_result(jobs["proportional"])
        assert uni.profile.source == "published" and uni.profile.phase == "profile"
        assert prop.profile.source == "cache" and prop.profile.key == uni.profile.key and prop.profile.steps == 2
        assert prop.profile.computed_by == str(jobs["uniform"].resolve())
        uni_grads = read_grad_records(jobs["uniform"] / "grad_norms.parquet")
        prop_grads = read_grad_records(jobs["proportional"] / "grad_norms.parquet")
        assert set(prop_grads["phase"].tolist()) == {"profile", "train"}
        mine = prop_grads["phase"] == "profile"
        np.testing.assert_array_equal(prop_grads["norm"][mine], uni_grads["norm"])
        assert layer_importance(prop_grads, "profile").tolist() == pytest.approx(prop.allocation.importance)
        assert layer_importance(uni_grads, "train").tolist() == pytest.approx(prop.allocation.importance)
    cache = ProfileCache(Path(read_result(job_dirs(sweep_dir)["proportional"]).profile.path).parent)
    rows = cache.computations()
    assert len(rows) == 2 and {r["computed_by"] for r in rows} == {
        str(job_dirs(sweep_dir, s)["uniform"].resolve()) for s in (0, 1)}


def test_offline_wandb_runs_hold_per_layer_metrics_and_eval(sweep):
    """Read back from the offline run files: per-layer metrics on the training-step axis (steps 1..n for
    every arm, also for the proportional job that read a profile first), eval in the summary only, the
    allocation and every evaluated question as tables."""
    sweep_dir, _ = sweep
    for strategy, path in job_dirs(sweep_dir).items():
        recs = wandb_records(path)
        rows = [r["history"]["item"] for r in recs if r.get("type") == "history"]
        summary = {}
        for r in recs:
            if r.get("type") == "summary":
                summary.update(r["summary"]["update"])
        axes = {m["metric"].get("glob_name"): m["metric"].get("step_metric") for m in recs if m.get("type") == "metric"}
        assert axes["grad_share/*"] == axes["train/*"] == "train/global_step"
        assert axes["profile/*"] == "profile/train/global_step"
        grad_rows = [r for r in rows if "grad_share/layer_00" in r]
        assert [r["train/global_step"] for r in grad_rows] == [1, 2], strategy
        for r in grad_rows:
            assert all(f"grad_share/layer_{i:02d}" in r and f"grad_norm/layer_{i:02d}" in r for i in range(12))
            assert "grad_share_module/q_proj" in r
        # every trainer row sits on the training axis at its own step, never on W&B's own counter
        train_rows = [r for r in rows if "train/loss" in r]
        assert train_rows and all(1 <= r["train/global_step"] <= 2 for r in train_rows)
        assert not any(k.startswith("eval/accuracy") for r in rows for k in r)
        assert summary["eval/accuracy"] == pytest.approx(read_result(path).eval.accuracy)
        tables = {k.removesuffix("._type") for r in rows for k, v in r.items() if k.endswith("._type") and v == "table-file"}
        assert {"allocation", "eval/outcomes"} <= tables, tables
        run = next(r["run"] for r in recs if r.get("type") == "run")
        assert run["display_name"] == f"{strategy}-full-s0"
        assert run["run_group"] == read_result(path).job.group


def test_dry_run_prints_the_allocation_and_trains_nothing(sweep, tmp_path):
    sweep_dir, _ = sweep
    uniform_job = job_dirs(sweep_dir)["uniform"]
    proc = run_cli(["grpo_rank.run", "model=tiny", "strategy=proportional", "dry_run=true",
                    f"profile.from_run={uniform_job}", f"hydra.run.dir={tmp_path}/dry"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "layer  rank  importance_share" in proc.stdout
    res = read_result(tmp_path / "dry")
    assert res.status == "dry_run" and res.params.built == res.params.planned
    assert f"{res.params.planned:,} trainable LoRA parameters" in proc.stdout
    assert res.profile.source == "from_run" and res.profile.phase == "train" and res.train is None
    assert not (tmp_path / "dry" / "grad_norms.parquet").exists()


def test_report_on_the_real_sweep(sweep, tmp_path):
    from matplotlib.image import imread

    sweep_dir, _ = sweep
    partial = tmp_path / "partial"
    shutil.copytree(sweep_dir, partial, ignore=shutil.ignore_patterns("wandb"))
    lost = job_dirs(partial, seed=1)["random"]
    (lost / "result.json").unlink()  # a job that died before recording
    proc = run_cli(["grpo_rank.report", str(partial), "--no-wandb"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = partial / "report"
    for fig in ("fig1_uniform_grad_share.png", "fig2_amplification.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(out / fig).std() > 0.01, f"{fig} is one flat colour"
    import csv

    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert sorted(r["strategy"] for r in rows) == sorted(STRATEGIES)
    md = (out / "report.md").read_text()
    assert lost.name in md and "Missing and failed jobs" in md
    assert "Table 1" in proc.stdout
    # each seed's uniform job published the profile: it is the proportional job's rank source, found from
    # the record's S(l), so the independent reference is the other seed's uniform run
    stats_rows = list(csv.DictReader((out / "stats.csv").open()))
    notes = {r["seed"]: r["note"] for r in stats_rows
             if r["strategy"] == "proportional" and r["statistic"] == "rank_shift_pearson_independent"}
    assert "vs the mean of uniform s1 (rank source: s0, same run)" in notes["s0"]
    assert "vs the mean of uniform s0 (rank source: s1, same run)" in notes["s1"]
    assert not [r for r in csv.DictReader((out / "paired.csv").open()) if r["seeds"].startswith("pooled")]


def test_wandb_dashboard_names_only_what_the_runs_log(sweep, tmp_path):
    """`report --wandb-report` offline: the Report is built and its spec serialised without uploading;
    every metric and step axis a panel plots is one the job runs logged (read back from their offline
    files), and the scatter's table and columns are the report run's."""
    pytest.importorskip("wandb_workspaces")
    from grpo_rank.analysis.report.wandb_mirror import DASHBOARD_SPEC, panel_names

    sweep_dir, _ = sweep
    out = tmp_path / "report"
    proc = run_cli(["grpo_rank.report", str(sweep_dir), "--out", str(out), "--wandb-report"], cwd=tmp_path,
                   env_extra={"WANDB_API_KEY": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"spec written to `{DASHBOARD_SPEC}`, not saved" in proc.stdout
    names = panel_names(json.loads((out / DASHBOARD_SPEC).read_text()))
    logged = set()
    for path in job_dirs(sweep_dir).values():
        for r in wandb_records(path):
            if r.get("type") in ("history", "summary"):
                logged.update(r["history"]["item"] if r["type"] == "history" else r["summary"]["update"])
    assert {"eval/accuracy", "train/global_step", "grad_share/layer_11", "grad_share_module/down_proj"} <= names["metrics"]
    assert names["metrics"] <= logged, names["metrics"] - logged
    report_rows = [r["history"]["item"] for r in wandb_records(out) if r.get("type") == "history"]
    tables = {k.removesuffix("._type") for r in report_rows for k, v in r.items() if v == "table-file"}
    assert names["tables"] == {"report/rank_shift"} and names["tables"] <= tables
    table = json.loads(next(out.glob("wandb/*/files/media/table/report/rank_shift*.table.json")).read_text())
    assert names["columns"] <= set(table["columns"]) and len(table["data"]) > 0


# slow (make test-slow): the default run grows a sweep in test_sweep's grown-sweep test
@pytest.mark.slow
def test_relaunch_with_one_more_seed_runs_only_the_new_jobs(tiny_sweep, tmp_path):
    sweep_dir = copy_tiny_sweep(tiny_sweep, tmp_path / "copy")
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/result.json")}
    proc = run_cli(["grpo_rank.run", "-m", *TINY, f"strategy={','.join(STRATEGIES)}", "seed=0,1,2",
                    "tracking.mode=offline", f"hydra.sweep.dir={sweep_dir}", f"profile.cache_dir={sweep_dir.parent}/profiles"],
                   cwd=sweep_dir.parent, env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = {line.strip().split(": ")[0]: line.strip().split(": ")[1] for line in proc.stdout.splitlines()
               if line.startswith("  ") and ": " in line}
    assert sorted(n for n, o in outcome.items() if o == "skipped") == sorted(str(p.parent.name) for p in before)
    assert sorted(n for n, o in outcome.items() if o == "finished") == sorted(
        f"seed-2_strategy-{s}" for s in STRATEGIES)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the earlier records are untouched
