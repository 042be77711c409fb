"""W&B is a sink: a job whose W&B run cannot start still finishes and keeps every local record."""

from __future__ import annotations

from grpo_rank.job import run_job

from .conftest import JobFiles, TINY, typed


def test_a_wandb_failure_does_not_fail_the_job(tmp_path, cache_dir):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "wandb").write_text("a file where W&B wants its folder\n")
    cfg = typed(*TINY, "grpo.steps=1", "grpo.save_steps=0", "eval.n=4", "tracking.mode=offline",
                f"profile.cache_dir={tmp_path}/profiles")
    result = run_job(cfg, job_dir)
    assert result.status == "ok"
    assert result.wandb.error and result.wandb.run_id is None
    job = JobFiles(job_dir)
    assert job.result.status == "ok" and job.result.eval.n == 4
    assert job.grads is not None and len(job.outcomes) == 4
