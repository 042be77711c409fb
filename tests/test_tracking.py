"""W&B is a sink: a job whose W&B run cannot start still finishes and keeps every local record; a relaunched
job gets its run id back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from grpo_rank.pipeline.job import run_job
from tests.conftest import ROOT, TINY, JobFiles, detached_wandb_service, typed


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


SINK = """
import sys, time
from pathlib import Path
from grpo_rank.pipeline.tracking import WandbSink
sink = WandbSink(mode="offline", project="p", entity=None, group="g", name="n", tags=[], config={},
                 directory=Path(sys.argv[1]), run_id="reclaimedrun0001")
sink.log({"x": int(sys.argv[2])})
print(sink.info().run_id, sink.info().error, flush=True)
if sys.argv[2] == "1":
    time.sleep(600)  # killed here, its run still open in the shared service
sink.finish()
"""


def test_a_relaunch_reclaims_its_run_id_from_a_shared_service_that_holds_the_killed_attempt(tmp_path):
    """Workers sharing one wandb-core service (WANDB_SERVICE, W&B's advice for many workers on a node, and
    what a process that used W&B passes to its children): the killed attempt's stream stays open there, and
    the relaunch must still get its run id, in a service of its own, with no empty folder left behind."""
    with detached_wandb_service("2m") as service:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **service)
        first = subprocess.Popen([sys.executable, "-c", SINK, str(tmp_path), "1"], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert first.stdout.readline().split() == ["reclaimedrun0001", "None"]
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        again = subprocess.run([sys.executable, "-c", SINK, str(tmp_path), "2"], env=env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert again.stdout.split() == ["reclaimedrun0001", "None"], again.stderr[-2000:]
    folders = sorted((tmp_path / "wandb").glob("offline-run-*-reclaimedrun0001*"))
    assert len(folders) == 2 and all((f / "run-reclaimedrun0001.wandb").exists() for f in folders), folders
