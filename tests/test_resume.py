"""Preemption-safe resume, for real: a tiny-model proportional job killed with SIGKILL after a checkpoint,
mid-training, and launched again with the same command into the same folder, resumes from that
checkpoint; its result, gradient records, training log, watched completions and eval outcomes equal an
uninterrupted run's.

    python -m pytest -q tests/test_resume.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.record.files import COMPLETIONS, RUNS, read_jsonl
from grpo_rank.training.checkpoint import STATE
from tests.conftest import ROOT, TINY, JobFiles, detached_wandb_service, run_cli

# 6 steps, a checkpoint every 3: the kill lands after step 3's checkpoint, once step 4 is logged, so the
# killed attempt has logged a step the resumed one must not log twice
# completions every 2 steps: the killed attempt wrote step 4's, which the resumed one writes again
ARGS = [*TINY, "strategy=proportional", "grpo.steps=6", "grpo.save_steps=3", "tracking.mode=offline",
        "tracking.completions_every=2"]


def command(job_dir: Path, cache: Path) -> list[str]:
    return ["grpo_rank.run", *ARGS, f"profile.cache_dir={cache}", f"hydra.run.dir={job_dir}"]


def logged_steps(job_dir: Path, phase: str) -> list[int]:
    return [r["step"] for r in read_jsonl(job_dir / "train_log.jsonl") if r.get("phase") == phase]


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the complete checkpoints in a trainer output folder."""
    return sorted(int(p.parent.name.split("-")[1]) for p in folder.glob(f"checkpoint-*/{STATE}"))


def kill_when(args: list[str], cwd: Path, ready, timeout: float = 600, env_extra: dict | None = None) -> None:
    """Starts `python -m <args>` and SIGKILLs it as soon as `ready()` holds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return
            if proc.poll() is not None:
                pytest.fail(f"the job ended (rc {proc.returncode}) before it could be killed")
            time.sleep(0.02)
        pytest.fail("the job never reached the point to kill it at")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def shared_wandb_service():
    """A detached wandb-core service that every launch connects to (WANDB_SERVICE), as W&B recommends for
    many workers on a node and as a test runner or launcher that used W&B passes on: the killed attempt's
    stream stays open in it, so the relaunch must reclaim its run id elsewhere."""
    with detached_wandb_service() as service:
        yield service


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir, shared_wandb_service):
    root = tmp_path_factory.mktemp("resume")
    service = shared_wandb_service
    ref = run_cli(command(root / "ref", root / "profiles_ref"), cwd=root, env_extra=service)
    assert ref.returncode == 0, ref.stderr[-3000:]
    # its own profile cache, so the killed job computes the profile too: two processes, one set of bytes
    job = root / "killed"
    kill_when(command(job, root / "profiles"), root,
              lambda: checkpoint_steps(job / "trainer_train") and max(logged_steps(job, "train"), default=0) >= 4,
              env_extra=service)
    killed_at = checkpoint_steps(job / "trainer_train")[-1]
    assert not (root / "killed" / "result.json").exists()  # SIGKILL leaves no chance to record anything
    partial = read_jsonl(root / "killed" / "train_log.jsonl")
    partial_completions = read_jsonl(root / "killed" / COMPLETIONS)
    again = run_cli(command(root / "killed", root / "profiles"), cwd=root, env_extra=service)
    assert again.returncode == 0, again.stderr[-3000:]
    return JobFiles(root / "ref"), JobFiles(root / "killed"), killed_at, partial, partial_completions


def test_the_kill_landed_after_a_checkpoint_and_a_later_step(runs):
    _, _, killed_at, partial, _ = runs
    assert killed_at == 3
    assert max(r["step"] for r in partial if r["phase"] == "train") > killed_at


def test_relaunch_resumed_rather_than_restarted(runs):
    ref, resumed, killed_at, *_ = runs
    assert resumed.result.train.resumed_from_step == killed_at
    assert ref.result.train.resumed_from_step is None
    events = [e["event"] for e in read_jsonl(resumed.path / RUNS)]
    assert events == ["started", "started", "finished"]  # SIGKILL: the first launch recorded no outcome
    assert f"resumed from step {killed_at}" in read_jsonl(resumed.path / RUNS)[-1]["detail"]
    assert not (resumed.path / "trainer_train").exists()  # checkpoints go once the result is recorded


def test_resumed_result_equals_uninterrupted(runs):
    ref, resumed, *_ = runs
    a, b = ref.result, resumed.result
    assert b.status == "ok"
    for key in ("allocation", "params", "eval"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.train.importance == b.train.importance
    assert a.train.nonzero_spread_fraction == b.train.nonzero_spread_fraction
    assert ref.outcomes == resumed.outcomes


def test_gradient_records_hold_every_step_once_and_equal_uninterrupted(runs):
    ref, resumed, *_ = runs
    g, h = ref.grads, resumed.grads
    for phase, steps in (("profile", 2), ("train", 6)):
        sel = h["phase"] == phase
        per_step = np.unique(h["step"][sel], return_counts=True)
        assert per_step[0].tolist() == list(range(1, steps + 1)), phase
        assert len(set(per_step[1].tolist())) == 1, f"{phase}: a step recorded twice or partly"
    assert set(g) == set(h)
    for col in g:
        assert np.array_equal(g[col], h[col]), col


def test_training_log_holds_every_step_once_and_equals_uninterrupted(runs):
    ref, resumed, *_ = runs
    numeric = ("reward", "reward_std", "loss", "grad_norm", "learning_rate", "frac_reward_zero_std", "kl")

    def key_values(job):
        return [(r["phase"], r["step"], *(r.get(k) for k in numeric)) for r in job.train_log]

    assert [(p, s) for p, s, *_ in key_values(resumed)] == [("profile", 1), ("profile", 2)] + [
        ("train", s) for s in range(1, 7)]
    assert key_values(ref) == key_values(resumed)


def test_watched_completions_hold_every_step_once_and_equal_uninterrupted(runs):
    ref, resumed, killed_at, _, partial = runs
    assert {r["step"] for r in partial} == {2, 4} and killed_at == 3  # step 4's rows came after the checkpoint
    rows = read_jsonl(resumed.path / COMPLETIONS)
    assert [r["step"] for r in rows] == [s for s in (2, 4, 6) for _ in range(8)]
    assert rows == read_jsonl(ref.path / COMPLETIONS)


def test_profile_computed_in_two_processes_is_the_same_bytes_and_read_back_from_cache(runs):
    ref, resumed, *_ = runs
    assert ref.result.profile.sha256 == resumed.result.profile.sha256
    assert ref.result.profile.key == resumed.result.profile.key
    assert ref.result.profile.source == "profiled"
    assert resumed.result.profile.source == "cache"  # the killed attempt had finished profiling


def test_wandb_run_resumed_under_the_same_id(runs):
    _, resumed, *_ = runs
    run_id = resumed.result.wandb.run_id
    assert resumed.result.wandb.error is None
    assert run_id and resumed.result.job.run_id == run_id
    attempts = sorted(resumed.path.glob(f"wandb/offline-run-*-{run_id}*"))
    assert len(attempts) == 2, attempts  # one offline run folder per launch, one W&B run id
    assert all((a / f"run-{run_id}.wandb").exists() for a in attempts)


@pytest.mark.slow
def test_a_profile_killed_mid_computation_is_resumed_by_the_next_job_that_needs_it(tmp_path, cache_dir):
    args = [*TINY, "strategy=proportional", "profile.steps=6", "grpo.steps=1", "grpo.save_steps=3",
            "tracking.mode=disabled"]
    ref = run_cli(["grpo_rank.run", *args, f"profile.cache_dir={tmp_path}/ref_profiles",
                   f"hydra.run.dir={tmp_path}/ref"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    key = JobFiles(tmp_path / "ref").result.profile.key
    cache = tmp_path / "profiles"
    # job a dies while computing the profile; job b, another job that needs the same profile, takes over
    kill_when(["grpo_rank.run", *args, f"profile.cache_dir={cache}", f"hydra.run.dir={tmp_path}/a"], tmp_path,
              lambda: checkpoint_steps(cache / f"{key}.work") and max(logged_steps(tmp_path / "a", "profile"),
                                                                     default=0) >= 4)
    assert not (cache / key).exists()  # no entry: the computation was cut short
    b = run_cli(["grpo_rank.run", *args, "budget=reduced70", f"profile.cache_dir={cache}",
                 f"hydra.run.dir={tmp_path}/b"], cwd=tmp_path)
    assert b.returncode == 0, b.stderr[-3000:]
    prof = JobFiles(tmp_path / "b").result.profile
    assert prof.source == "profiled" and prof.resumed_from_step == 3
    assert prof.sha256 == JobFiles(tmp_path / "ref").result.profile.sha256
    assert [r["step"] for r in JobFiles(tmp_path / "b").train_log if r["phase"] == "profile"] == list(range(1, 7))
    assert not (cache / f"{key}.work").exists()  # the finished computation's checkpoints are gone
