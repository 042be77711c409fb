"""The study's missing arms (algorithms, capacity curve, AdaLoRA, per-reward gradients) end to end, as a
user runs them: a tiny multirun over algorithm x strategy (with adalora) x lora.r, a per-reward sweep,
and the report that reads both (capacity curve, landscapes by algorithm, rank trajectories, per-reward
landscapes). Slow: 10 real tiny jobs through the CLI."""

from __future__ import annotations

import csv

import pytest

from grpo_rank.record.result import read_result
from tests.conftest import TINY, job_folders, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("arms")
    common = [*TINY, "eval.n=4", "grpo.save_steps=0", "tracking.mode=disabled", f"profile.cache_dir={root}/profiles"]
    arms = run_cli(["grpo_rank.run", "-m", *common, "strategy=uniform,adalora", "algorithm=dapo,sft", "lora.r=2,8",
                    f"hydra.sweep.dir={root}/arms"], cwd=root)
    assert arms.returncode == 0, arms.stderr[-3000:]
    rewards = run_cli(["grpo_rank.run", "-m", *common, "profile.per_reward=true", "seed=0,1",
                       f"hydra.sweep.dir={root}/rewards"], cwd=root)
    assert rewards.returncode == 0, rewards.stderr[-3000:]
    out = root / "report"
    rep = run_cli(["grpo_rank.report", str(root / "arms"), str(root / "rewards"), "--out", str(out), "--no-wandb"],
                  cwd=root)
    assert rep.returncode == 0, rep.stderr[-3000:]
    return root, out


def test_every_arm_ran(report):
    root, _ = report
    records = [read_result(p) for p in job_folders(root / "arms").values()]
    assert len(records) == 8 and all(r.status == "ok" for r in records)
    adaptive = [r for r in records if r.job.strategy == "adalora"]
    assert all(r.adaptive.final_total == r.adaptive.target_total for r in adaptive)


def test_the_report_shows_the_new_arms(report):
    _, out = report
    md = (out / "report.md").read_text()
    for section in ("Capacity", "Landscapes by algorithm", "Rank trajectories", "Per-reward gradient landscapes"):
        assert section in md, section
    capacity = list(csv.DictReader(open(out / "capacity.csv")))
    assert {(r["algorithm"], r["strategy"], r["r"]) for r in capacity} >= {
        ("dapo", "uniform", "2"), ("dapo", "uniform", "8"), ("sft", "uniform", "2"), ("sft", "uniform", "8")}
    rewards = {r["reward"] for r in csv.DictReader(open(out / "rewards.csv"))}
    assert rewards >= {"format_partial", "correctness_partial"}
    for fig in ("fig3_capacity.png", "fig4_rank_trajectories.png", "fig5_reward_landscapes.png"):
        assert (out / fig).stat().st_size > 10_000, fig
