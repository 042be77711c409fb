"""grpo_rank.status on real sweep folders: a tiny sweep with one finished and one failed job, then the
states a sweep in progress leaves on disk (a running job, a killed one, a job not started yet), and
(slow) a sweep on the local Slurm cluster read while it runs.

    python -m pytest -q tests/test_status.py              # one tiny sweep, ~30 s on 2 cores
    python -m pytest -q -m slow tests/test_status.py      # + the Slurm sweep (local-slurm.sh start first)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpo_rank.record.files import GRADS, OUTCOMES, RESULT, RUNS, TRAIN_LOG, append_jsonl, read_jsonl, write_jsonl
from grpo_rank.record.result import read_result
from grpo_rank.sweep.status import parse_sacct, sweep_status
from tests.conftest import ROOT, TINY, run_cli, slurm_up

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# two jobs: 64 hidden units split into 4 heads (finishes), and into 3 (fails when the model is built)
SWEEP = [*TINY, "strategy=proportional", "model.tiny.num_heads=4,3", "seed=0", "tracking.mode=disabled",
         "threads=1"]  # one torch thread: the 2 cores are shared with other processes


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir) -> Path:
    root = tmp_path_factory.mktemp("status")
    proc = run_cli(["grpo_rank.run", "-m", *SWEEP, f"hydra.sweep.dir={root}/sweep",
                    f"profile.cache_dir={root}/profiles"], cwd=root, env_extra=THREADS)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep itself says one job failed
    return root / "sweep"


def folder_with(sweep_dir: Path, override: str) -> Path:
    """The job folder whose .hydra/overrides.yaml holds `override` (whatever the folder is named)."""
    (folder,) = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()
                 and override in OmegaConf.load(p / ".hydra" / "overrides.yaml")]
    return folder


def status_cli(sweep_dir: Path, *args: str):
    proc = run_cli(["grpo_rank.status", str(sweep_dir), *args], cwd=sweep_dir, env_extra=THREADS, timeout=120)
    return proc, proc.stdout.splitlines()


def columns(lines: list[str]) -> dict[str, list[str]]:
    """The job lines (all but the total) as {name: [state, detail]}: columns are 2+ spaces apart."""
    return {parts[0]: parts[1:] for parts in (re.split(r"\s{2,}", line, maxsplit=2) for line in lines[:-1])}


def copy_sweep(sweep_dir: Path, dest: Path) -> Path:
    shutil.copytree(sweep_dir, dest)
    return dest


def leave_running(job: Path, profile_rows: int, train_rows: int, pid: int) -> list[dict]:
    """The job folder as a job mid-training leaves it: launched again (a `started` event of this process),
    no record, no evaluation, and the training log cut after the steps it has done. Returns those rows."""
    for name in (RESULT, GRADS, OUTCOMES, "error.txt"):
        (job / name).unlink(missing_ok=True)
    rows = read_jsonl(job / TRAIN_LOG)
    kept = [r for r in rows if r["phase"] == "profile"][:profile_rows] + \
           [r for r in rows if r["phase"] == "train"][:train_rows]
    write_jsonl(job / TRAIN_LOG, kept)
    append_jsonl(job / RUNS, {"event": "started", "time": time.time() - 30, "host": socket.gethostname(), "pid": pid})
    return kept


def test_finished_and_failed_jobs_and_the_total(sweep):
    proc, lines = status_cli(sweep)
    assert proc.returncode == 1, proc.stderr  # a job failed
    ok, bad = folder_with(sweep, "model.tiny.num_heads=4"), folder_with(sweep, "model.tiny.num_heads=3")
    ev = read_result(ok).eval
    by_name = columns(lines)
    assert len(by_name) == 2
    assert by_name[ok.name] == ["finished", f"accuracy {ev.accuracy:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] n=8"]
    failed = [e for e in read_jsonl(bad / RUNS) if e["event"] == "failed"][-1]["detail"]
    assert "64" in failed and "3" in failed and "\n" not in failed  # one line naming the sizes that clash
    assert by_name[bad.name] == ["failed", failed]
    assert lines[-1] == "total 2 jobs: 1 finished, 0 running, 0 queued, 1 failed"


def test_json_output_carries_the_record(sweep):
    proc, _ = status_cli(sweep, "--json")
    doc = json.loads(proc.stdout)
    assert doc["totals"] == {"finished": 1, "running": 0, "queued": 0, "failed": 1, "not started": 0, "dry run": 0}
    ok = folder_with(sweep, "model.tiny.num_heads=4")
    (job,) = [j for j in doc["jobs"] if j["state"] == "finished"]
    ev = read_result(ok).eval
    assert (job["path"], job["accuracy"], job["ci_low"], job["ci_high"]) == (str(ok), ev.accuracy, ev.ci_low, ev.ci_high)
    assert "model.tiny.num_heads=4" in job["overrides"]


@pytest.mark.parametrize("profile_rows, train_rows, phase, step, steps_left",
                         [(1, 0, "profile", 1, 1 + 2),  # one profile step left, then both training steps
                          (2, 1, "train", 1, 1)])
def test_a_running_job_shows_its_step_and_an_eta_from_its_step_times(sweep, tmp_path, profile_rows, train_rows,
                                                                     phase, step, steps_left):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    job = folder_with(copy, "model.tiny.num_heads=4")
    kept = leave_running(job, profile_rows, train_rows, os.getpid())  # this process: alive, like the job's
    times = [r["step_time"] for r in kept if r["phase"] == phase]
    assert times and all(t > 0 for t in times)  # TRL logged each step's duration
    (st,) = [s for s in sweep_status(copy) if s.path == str(job)]
    assert (st.state, st.phase, st.step, st.steps) == ("running", phase, step, 2)
    assert st.eta_s == pytest.approx(steps_left * sorted(times)[len(times) // 2])
    assert st.detail.startswith(f"{phase} step {step} of 2, ETA ")
    proc, lines = status_cli(copy)
    assert lines[-1] == "total 2 jobs: 0 finished, 1 running, 0 queued, 1 failed"


def test_a_job_killed_without_a_record_is_failed_not_running(sweep, tmp_path):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    job = folder_with(copy, "model.tiny.num_heads=4")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leave_running(job, 2, 1, int(gone.stdout))  # its process has exited: SIGKILL leaves exactly this
    (st,) = [s for s in sweep_status(copy) if s.path == str(job)]
    assert st.state == "failed" and f"process {int(gone.stdout)} on {socket.gethostname()} is gone" in st.detail


def test_a_job_of_the_sweep_without_a_folder_is_not_started(sweep, tmp_path):
    from grpo_rank.sweep.naming import job_dir_name

    copy = copy_sweep(sweep, tmp_path / "sweep")
    mr = OmegaConf.load(copy / "multirun.yaml")
    mr.hydra.overrides.task = [("seed=0,1" if o == "seed=0" else o) for o in mr.hydra.overrides.task]
    OmegaConf.save(mr, copy / "multirun.yaml")  # as Hydra writes it when the sweep is relaunched with seed=0,1
    proc, lines = status_cli(copy, "--json")
    jobs = json.loads(proc.stdout)["jobs"]
    assert len(jobs) == 4 and proc.returncode == 1
    new = [j for j in jobs if "seed=1" in j["overrides"]]
    assert [(j["state"], j["detail"], j["path"]) for j in new] == [("not started", "no folder yet", None)] * 2
    assert {j["name"] for j in new} == {job_dir_name(j["overrides"], {"model.tiny.num_heads", "seed"}) for j in new}
    old = {j["path"]: j["state"] for j in jobs if "seed=0" in j["overrides"]}  # seed 0's folders still match
    assert old == {str(folder_with(copy, "model.tiny.num_heads=4")): "finished",
                   str(folder_with(copy, "model.tiny.num_heads=3")): "failed"}
    _, lines = status_cli(copy)
    assert lines[-1] == "total 4 jobs: 1 finished, 0 running, 0 queued, 1 failed, 2 not started"


def test_sacct_lines_with_array_ranges_steps_and_reasons():
    text = ("12_0|RUNNING\n12_0.batch|RUNNING\n12_0.extern|RUNNING\n12_[1-3,5%2]|PENDING\n"
            "13|CANCELLED by 0\n14_2|PREEMPTED\n14_2|RUNNING\n")
    assert parse_sacct(text) == {"12_0": "RUNNING", "12_1": "PENDING", "12_2": "PENDING", "12_3": "PENDING",
                                 "12_5": "PENDING", "13": "CANCELLED", "14_2": "RUNNING"}


def test_a_missing_sweep_folder_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(["grpo_rank.status", str(tmp_path / "nope")], cwd=tmp_path, env_extra=THREADS, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not a folder" in proc.stderr


# ---- slow: a sweep on the local Slurm cluster, read while it runs

# four jobs on the cluster's 2 CPUs: two wait in the queue while two run
SLURM_SWEEP = [*TINY, "strategy=uniform,random", "seed=0,1", "grpo.steps=6", "tracking.mode=disabled"]


@pytest.mark.slow
@pytest.mark.skipif(not slurm_up(), reason="no Slurm: bash ../shared/slurm/local-slurm.sh start")
def test_status_follows_a_slurm_sweep_queued_running_cancelled_finished(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **THREADS)
    proc = subprocess.Popen([sys.executable, "-m", "grpo_rank.run", "-m", "hydra/launcher=slurm", *SLURM_SWEEP,
                             f"hydra.sweep.dir={sweep_dir}", f"profile.cache_dir={tmp_path}/profiles"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    queued, running, cancelled = [], [], None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            statuses = sweep_status(sweep_dir) if sweep_dir.is_dir() else []
            queued += [st for st in statuses if st.state == "queued"]
            running += [st for st in statuses if st.state == "running" and st.steps]
            # the last task, once it runs: cancel it as a user would (submitit ignores the SIGTERM, Slurm
            # kills it 5 s later, before it can record an outcome); the launcher then stops with an error
            last = next((st for st in statuses if (st.slurm_id or "").endswith("_3") and st.path), None)
            if cancelled is None and last is not None and last.state == "running":
                subprocess.run(["scancel", last.slurm_id], check=True)
                cancelled = last
            time.sleep(0.5)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # two tasks waited for a CPU, before they had a folder, and sacct said so
    assert {st.slurm_id for st in queued if st.path is None and st.slurm_state == "PENDING"} >= {
        cancelled.slurm_id.replace("_3", "_2"), cancelled.slurm_id}
    assert all(st.detail.startswith(f"slurm {st.slurm_id} ") for st in queued)
    # running jobs showed their training step of 6, with the Slurm task they ran as
    assert len({st.slurm_id for st in running}) >= 2
    assert all(st.phase in ("train", "eval") and st.steps == 6 and 0 <= st.step <= 6 and st.slurm_id
               for st in running), [(st.phase, st.step, st.steps, st.slurm_id) for st in running]

    final = {st.slurm_id or st.name: st for st in sweep_status(sweep_dir)}
    gone = final[cancelled.slurm_id]
    assert gone.state == "failed" and "CANCELLED" in gone.detail, gone
    finished = [st for st in final.values() if st.state == "finished"]
    assert len(finished) == 3, [(st.name, st.state, st.detail) for st in final.values()]
    for st in finished:
        assert st.accuracy == read_result(Path(st.path)).eval.accuracy
        assert any(e.get("slurm_array_task_id") for e in read_jsonl(Path(st.path) / RUNS))  # ran on Slurm
    status, lines = status_cli(sweep_dir)
    assert status.returncode == 1 and lines[-1] == "total 4 jobs: 3 finished, 0 running, 0 queued, 1 failed"
