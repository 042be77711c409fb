"""Sweeps past one process: launchers as config, thread shares per launcher, idempotent reruns (skip,
force, damaged records), failure isolation, and the sweep on a real (local, one-node) Slurm cluster.

    python -m pytest -q tests/test_sweep.py              # the default, a few minutes on 2 cores
    python -m pytest -q -m slow tests/test_sweep.py      # + the 9-job sweep and the Slurm sweep
    bash ../shared/slurm/local-slurm.sh start            # the Slurm tests skip until the cluster is UP
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from grpo_rank.profiling.cache import ProfileCache
from grpo_rank.record.files import GRADS, RESULT, RUNS, read_grad_records, read_jsonl
from grpo_rank.record.result import read_result
from grpo_rank.runtime.threads import launcher_parallelism, plan_threads
from grpo_rank.sweep.naming import config_key
from grpo_rank.sweep.runlog import finished_result
from grpo_rank.sweep.status import slurm_states, submissions, sweep_status
from tests.conftest import ROOT, TINY, compose, job_folders, run_cli, slurm_up, summary_lines


def computed(cache: Path) -> list[dict]:
    return [r for r in ProfileCache(cache).computations() if r["event"] == "computed"]


# ---- launchers are config

@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "submitit_local", "joblib"])
def test_launchers_compose(launcher, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=[f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"])
    lc = cfg.hydra.launcher
    if launcher == "joblib":
        assert lc._target_.endswith("JoblibLauncher") and lc.n_jobs == -1
    else:
        assert lc.submitit_folder == f"{tmp_path}/.submitit/%j"  # submitit's logs stay with the sweep
    if launcher == "slurm":
        assert (lc.cpus_per_task, lc.mem_gb, lc.gpus_per_node, lc.partition) == (1, 4, None, None)
        assert lc.max_num_timeout >= 1, "a preempted or timed-out job must requeue and resume"
        assert lc.timeout_min * 60 - lc.signal_delay_s > 60


@pytest.mark.parametrize("resources, expected", [
    ("cpu", (None, None, 2, 8, 120)),
    ("gpu1", ("gpu", 1, 8, 64, 720)),
])
def test_resources_set_the_slurm_launcher_in_one_choice(resources, expected, tmp_path):
    """resources=<profile> selects the Slurm launcher with that profile's partition, GPUs, cores, memory and
    time; any of them can still be overridden, and the job's own config (its hash) does not change."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from grpo_rank.config.schema import result_payload, to_typed
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=[f"resources={resources}", f"hydra.sweep.dir={tmp_path}"])
        plain = hydra_compose(config_name="config", overrides=[])
        job = hydra_compose(config_name="config", overrides=[f"resources={resources}"])
        custom = hydra_compose(config_name="config", return_hydra_config=True,
                               overrides=[f"resources={resources}", "hydra.launcher.partition=a100",
                                          f"hydra.sweep.dir={tmp_path}"])
    lc = cfg.hydra.launcher
    assert lc._target_.endswith("SlurmLauncher") and cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    assert (lc.partition, lc.gpus_per_node, lc.cpus_per_task, lc.mem_gb, lc.timeout_min) == expected
    assert lc.max_num_timeout >= 1 and lc.timeout_min * 60 - lc.signal_delay_s > 60
    assert custom.hydra.launcher.partition == "a100"
    assert result_payload(to_typed(job), "job") == result_payload(to_typed(plain), "job")


@pytest.mark.parametrize("explicit, launcher, env, expected", [
    (None, {}, {}, (8, "basic")),  # job after job: each takes the whole machine
    (None, {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, {},
     (4, "joblib")),
    (None, {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
            "array_parallelism": 256}, {}, (2, "submitit_local")),  # 4 jobs side by side on 8 cores
    (None, {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"},
     {"SLURM_CPUS_PER_TASK": "3"}, (3, "SLURM_CPUS_PER_TASK")),
    (5, {}, {"SLURM_CPUS_PER_TASK": "3"}, (5, "threads setting")),  # the explicit setting wins
    (None, {}, {"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "3"}, (1, "OMP_NUM_THREADS")),  # the user's
])
def test_threads_follow_the_launcher(explicit, launcher, env, expected):
    name, parallel = launcher_parallelism(launcher, sweep_size=4, cores=8)
    plan = plan_threads(explicit, name, parallel, cores=8, env=env)
    assert plan.threads == expected[0] and expected[1] in plan.source


def test_new_settings_are_typed():
    from grpo_rank.config.schema import to_typed

    cfg = to_typed(compose("force=true", "grpo.save_steps=5", "profile.cache_dir=/tmp/p"))
    assert (cfg.force, cfg.grpo.save_steps, cfg.profile.cache_dir) == (True, 5, "/tmp/p")


# ---- real sweeps of the tiny model. Those on the failing sweep and the aborted launcher are slow (make
# test-slow, in CI) to keep the default run within 8 minutes; test_bad_inputs' dry-run sweep keeps a failed
# job in a sweep in the default run.

FAILING = [*TINY, "strategy=uniform", "model.tiny.num_heads=3,4", "tracking.mode=disabled"]
BAD_JOB, OK_JOB = "model.tiny.num_heads-3", "model.tiny.num_heads-4"


@pytest.fixture(scope="module")
def failing(tmp_path_factory, cache_dir):
    """A sweep whose first job is rejected (64 hidden units do not split into 3 heads) and second finishes."""
    root = tmp_path_factory.mktemp("failing")
    cmd = ["grpo_rank.run", "-m", *FAILING, f"hydra.sweep.dir={root}/sweep"]
    result = root / "sweep" / OK_JOB / RESULT
    first = run_cli(cmd, cwd=root)
    mtimes = [result.stat().st_mtime_ns]
    second = run_cli(cmd, cwd=root)
    mtimes.append(result.stat().st_mtime_ns)
    forced = run_cli([*cmd, "force=true"], cwd=root)
    mtimes.append(result.stat().st_mtime_ns)
    return root / "sweep", first, second, forced, mtimes


@pytest.mark.slow
def test_one_failing_job_does_not_lose_the_others(failing):
    sweep, first, _, _, _ = failing
    assert first.returncode == 1
    assert read_result(sweep / OK_JOB).status == "ok"
    lines = summary_lines(first.stdout)
    # known before any model loads: recorded as this job's failure in one line, and the sweep went on
    assert lines[BAD_JOB].startswith("failed: config error: model.tiny.num_heads=3")
    assert lines[OK_JOB].startswith("finished: accuracy")
    assert "1 of 2 jobs did not finish" in first.stderr


@pytest.mark.slow
def test_rerun_skips_the_finished_job_and_reruns_the_failed_one(failing):
    sweep, _, second, _, mtimes = failing
    assert second.returncode == 1  # the failed job ran again, and failed again
    lines = summary_lines(second.stdout)
    assert lines[OK_JOB].startswith("skipped")
    assert lines[BAD_JOB].startswith("failed")
    assert mtimes[1] == mtimes[0]  # result.json untouched: nothing trained
    events = [e["event"] for e in read_jsonl(sweep / OK_JOB / RUNS)]
    assert events[:4] == ["started", "finished", "skipped", "started"]  # the 4th launch: force=true
    assert [e["event"] for e in read_jsonl(sweep / BAD_JOB / RUNS)][:4] == [
        "started", "failed", "started", "failed"]


@pytest.mark.slow
def test_the_sweep_status_is_printed_when_the_launcher_aborts(tmp_path):
    """A relaunch with one more seed whose launcher fails before any job runs (Slurm refuses the
    partition, or there is no Slurm here): Hydra never ends the multirun, and the sweep's status is
    printed anyway, with the earlier jobs and the one that never started."""
    sweep = tmp_path / "sweep"
    first = run_cli(["grpo_rank.run", "-m", *TINY, "dry_run=true", "seed=0,1", f"hydra.sweep.dir={sweep}"],
                    cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    proc = run_cli(["grpo_rank.run", "-m", *TINY, "dry_run=true", "seed=0,1,2", "hydra/launcher=slurm",
                    "hydra.launcher.partition=grpo-rank-no-such-partition", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout.splitlines()
    start = out.index(f"grpo-rank: the launcher stopped before the sweep ended; sweep {sweep}:")
    lines = [line.split() for line in out[start + 1:start + 4]]
    assert [(w[0], " ".join(w[1:3])) for w in lines] == [("seed-0", "dry run"), ("seed-1", "dry run"),
                                                       ("seed-2", "not started")]
    assert out[start + 4].strip().startswith("total 3 jobs:") and "1 not started" in out[start + 4]


@pytest.mark.slow
def test_force_reruns_a_finished_job(failing):
    sweep, _, _, forced, mtimes = failing
    assert summary_lines(forced.stdout)[OK_JOB].startswith("finished")
    assert mtimes[2] > mtimes[1]
    assert read_jsonl(sweep / OK_JOB / RUNS)[-1]["event"] == "finished"


@pytest.mark.slow
def test_a_finished_job_with_another_config_is_not_skipped(failing, tmp_path):
    sweep, *_ = failing
    job = read_result(sweep / OK_JOB)
    assert finished_result(sweep / OK_JOB, job.job.config_hash) is not None
    assert finished_result(sweep / OK_JOB, "another") is None


@pytest.mark.parametrize("content", ["null", "[]", '{"job": "x"}', '{"status": "ok"}', "{trunc", "",
                                     '{"schema_version": 99, "status": "ok"}'])
@pytest.mark.slow
def test_a_damaged_record_is_set_aside_and_the_job_reruns(failing, tmp_path, content, capsys):
    sweep, *_ = failing
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / RESULT).write_text(content)
    assert finished_result(job_dir, "any") is None  # no traceback: the job is simply not finished
    assert not (job_dir / RESULT).exists() and len(list(job_dir.glob(f"{RESULT}.damaged-*"))) == 1
    assert "result.json" in capsys.readouterr().err


# ---- a sweep that grows: its earlier jobs are found by identity, where they are

# the base model (strategy=none) trains nothing: a finished job in about a second
EVAL_ONLY = [o for o in TINY if not o.startswith("eval.n=")] + ["strategy=none", "tracking.mode=disabled"]


def test_a_grown_sweep_runs_only_its_new_jobs_and_keeps_the_old_folders(tmp_path, cache_dir):
    """Seed 0 alone, then seeds 0,1 x eval sizes 4,8 into the same sweep folder: the first job (named `job`:
    nothing was swept) is found by its identity and skipped where it is; only the three new jobs run."""
    sweep = tmp_path / "sweep"
    first = run_cli(["grpo_rank.run", "-m", *EVAL_ONLY, "eval.n=8", "seed=0", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(job_folders(sweep)) == ["job"]
    recorded = (sweep / "job" / RESULT).stat().st_mtime_ns
    key = read_jsonl(sweep / "job" / RUNS)[0]["job_key"]
    # a folder from before keys were recorded is keyed from the config Hydra saved there: the same key
    assert config_key(OmegaConf.load(sweep / "job" / ".hydra" / "config.yaml")) == key

    grown = run_cli(["grpo_rank.run", "-m", *EVAL_ONLY, "eval.n=4,8", "seed=0,1", f"hydra.sweep.dir={sweep}"],
                    cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr[-3000:]
    lines = summary_lines(grown.stdout)
    assert lines.pop("job").startswith("skipped")
    new = ["eval.n-4_seed-0", "eval.n-4_seed-1", "eval.n-8_seed-1"]
    assert sorted(lines) == new and all(v.startswith("finished") for v in lines.values()), lines
    assert sorted(job_folders(sweep)) == [*new, "job"] and not (sweep / "eval.n-8_seed-0").exists()
    assert (sweep / "job" / RESULT).stat().st_mtime_ns == recorded
    assert [e["event"] for e in read_jsonl(sweep / "job" / RUNS)] == ["started", "finished", "skipped"]
    assert {read_result(sweep / n).job.seed for n in new} == {0, 1}
    # the grown sweep's status: its four jobs, each in its folder, all finished
    statuses = sweep_status(sweep)
    assert sorted((st.name, st.state) for st in statuses) == [(n, "finished") for n in sorted([*new, "job"])]


# ---- slow: the 9-job sweep, and Slurm

NINE = [*TINY, "strategy=uniform,proportional,random", "seed=0,1,2", "tracking.mode=disabled"]


@pytest.mark.slow
def test_nine_job_sweep_profiles_once_per_seed_and_never_again(tmp_path, cache_dir):
    first = run_cli(["grpo_rank.run", "-m", *NINE, f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    cache = tmp_path / "multirun" / ".profiles"
    runs = computed(cache)
    seeds = {read_result(Path(r["computed_by"])).job.seed for r in runs}
    assert len(runs) == 3 and seeds == {0, 1, 2}  # only proportional profiles, once per seed
    # another sweep at another budget needs the same three profiles: none is computed again
    second = run_cli(["grpo_rank.run", "-m", *NINE, "budget=reduced70", f"hydra.sweep.dir={tmp_path}/b"],
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(computed(cache)) == 3
    sources = [r.profile.source for r in map(read_result, job_folders(tmp_path / "b").values())
               if r.job.strategy == "proportional"]
    assert sources == ["cache"] * 3
    # and rerunning the first sweep trains nothing
    third = run_cli(["grpo_rank.run", "-m", *NINE, f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path)
    assert third.returncode == 0
    assert all(v.startswith("skipped") for v in summary_lines(third.stdout).values())
    assert len(summary_lines(third.stdout)) == 9


requires_slurm = pytest.mark.skipif(not slurm_up(), reason="no Slurm: bash ../shared/slurm/local-slurm.sh start")

# 8 steps with a checkpoint every 2: room to preempt one job mid-training
SLURM_SWEEP = [*TINY, "strategy=uniform,proportional,random", "seed=0", "grpo.steps=8", "grpo.save_steps=2",
               "tracking.mode=disabled"]


def preempt_one_job(sweep_dir: Path, proc: subprocess.Popen, timeout: float = 600) -> tuple[Path, str]:
    """Preempts the first job seen past a checkpoint, as Slurm would: SIGTERM, then USR2 (what
    submitit's own Job._interrupt sends). Returns its folder and Slurm job id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for job in sorted(p for p in sweep_dir.glob("*") if (p / RUNS).exists()):
            events = read_jsonl(job / RUNS)
            logged = [r["step"] for r in read_jsonl(job / "train_log.jsonl") if r.get("phase") == "train"]
            ckpt = list(job.glob("trainer_train/checkpoint-*/grpo_rank_state.json"))
            if events and ckpt and logged and 3 <= max(logged) < 7:
                slurm_id = events[-1]["slurm_job_id"]
                subprocess.run(["scancel", slurm_id, "--signal", "SIGTERM"], check=True)
                subprocess.run(["scancel", slurm_id, "--signal", "USR2"], check=True)
                return job, slurm_id
        if proc.poll() is not None:
            pytest.fail("the sweep ended before any job could be preempted")
        time.sleep(0.05)
    pytest.fail("no job reached a checkpoint in time")


@pytest.mark.slow
@requires_slurm
def test_slurm_sweep_with_a_preemption_equals_the_local_sweep(tmp_path, cache_dir):
    local = run_cli(["grpo_rank.run", "-m", *SLURM_SWEEP, f"hydra.sweep.dir={tmp_path}/local",
                     f"profile.cache_dir={tmp_path}/profiles_local"], cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "grpo_rank.run", "-m", "hydra/launcher=slurm", *SLURM_SWEEP,
                             f"hydra.sweep.dir={tmp_path}/slurm", f"profile.cache_dir={tmp_path}/profiles_slurm"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        preempted, slurm_id = preempt_one_job(tmp_path / "slurm", proc)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = summary_lines(out)
    assert len(lines) == 3 and all(v.startswith("finished") for v in lines.values()), out

    # the preempted job was requeued under the same Slurm id and resumed from its checkpoint
    events = read_jsonl(preempted / RUNS)
    starts = [e for e in events if e["event"] == "started"]
    assert len(starts) == 2 and {e["slurm_job_id"] for e in starts} == {slurm_id}
    assert [e.get("slurm_restarts", "0") for e in starts] == ["0", "1"]
    assert "interrupted" in [e["event"] for e in events]  # submitit's checkpoint-and-requeue exit
    resumed = read_result(preempted).train.resumed_from_step
    assert resumed and resumed >= 2
    assert (tmp_path / "slurm" / ".submitit").is_dir()  # submitit's logs under the sweep

    # every job equals its local twin: allocation, accuracy and every gradient record
    local_jobs, slurm_jobs = job_folders(tmp_path / "local"), job_folders(tmp_path / "slurm")
    assert sorted(local_jobs) == sorted(slurm_jobs)
    for name, lpath in local_jobs.items():
        sres, lres = read_result(slurm_jobs[name]), read_result(lpath)
        assert sres.status == "ok"
        assert sres.allocation == lres.allocation, name
        assert sres.eval == lres.eval, name
        sg, lg = read_grad_records(slurm_jobs[name] / GRADS), read_grad_records(lpath / GRADS)
        assert set(sg) == set(lg)
        for col in lg:
            assert np.array_equal(sg[col], lg[col]), (name, col)
        steps = sg["step"][sg["phase"] == "train"]
        assert np.unique(steps).tolist() == list(range(1, 9))
    assert read_result(preempted).job.run_id


@pytest.mark.slow
@requires_slurm
def test_a_task_cancelled_while_pending_ends_the_slurm_sweep_as_failed(tmp_path):
    """Slurm 22.05 keeps no accounting row for an array task cancelled while it waits, and submitit's launcher
    would wait for it forever: the sweep ends instead, that job recorded as failed, the others done."""
    sweep = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # 2 cores per task on the 2-core node: one task runs at a time, the others wait in the queue
    proc = subprocess.Popen([sys.executable, "-m", "grpo_rank.run", "-m", *TINY, "dry_run=true", "strategy=uniform,random",
                             "seed=0,1", "tracking.mode=disabled", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=2",
                             "hydra.callbacks.slurm_queue.interval_s=2", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, last = time.time() + 300, None
        while last is None and time.time() < deadline and proc.poll() is None:
            last = next((s.slurm_id for s in submissions(sweep) if s.slurm_id.endswith("_3")), None) \
                if (sweep / ".submitit").is_dir() else None
            time.sleep(0.2)
        assert last, "the sweep submitted no 4th task"
        state = subprocess.run(["squeue", "--noheader", "--array", "-j", last, "--format=%T"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert state == ["PENDING"], state
        subprocess.run(["scancel", last], check=True)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    why = f"slurm {last} left the queue without running (cancelled while pending); launch the sweep again to run it"
    assert proc.returncode == 1, err[-3000:]
    lines = summary_lines(out)
    (dropped,) = [name for name, line in lines.items() if line.startswith("failed")]
    assert lines[dropped] == f"failed: {why}"
    assert sorted(line for name, line in lines.items() if name != dropped) == \
        ["dry_run: allocation only, nothing trained"] * 3
    events = read_jsonl(sweep / dropped / RUNS)
    assert [e["event"] for e in events] == ["submitted", "failed"]
    assert f"{events[0]['slurm_array_job_id']}_{events[0]['slurm_array_task_id']}" == last
    assert last not in slurm_states({last})  # the premise: sacct lists its array, not it
    statuses = {st.name: st for st in sweep_status(sweep)}
    assert (statuses[dropped].state, statuses[dropped].detail) == ("failed", why)
    assert sorted(st.state for st in statuses.values()) == ["dry run"] * 3 + ["failed"]
