"""Sweeps past one process: the shared profile cache under concurrent jobs, launchers as config,
idempotent reruns, failure isolation, and the sweep on a real (local, one-node) Slurm cluster.

    python -m pytest -q tests/test_scale.py              # the default, a few minutes on 2 cores
    python -m pytest -q -m slow tests/test_scale.py      # + the 9-job sweep and the Slurm sweep
    bash ../shared/slurm/local-slurm.sh start            # the Slurm tests skip until the cluster is UP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.profile import GRADS, MANIFEST, Profile, ProfileCache
from grpo_rank.records import RESULT, RUNS, load_job, read_jsonl

from .conftest import ROOT, TINY, compose, run_cli


def jobs_by_name(sweep_dir: Path) -> dict[str, object]:
    return {p.parent.name: load_job(p.parent) for p in sorted(sweep_dir.glob(f"*/{RESULT}"))}


def summary_lines(stdout: str) -> dict[str, str]:
    """The sweep summary's `  <job folder>: <outcome>: <why>` lines, by job folder."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and ": " in line:
            name, rest = line.strip().split(": ", 1)
            out[name] = rest
    return out


def computed(cache: Path) -> list[dict]:
    return [r for r in ProfileCache(cache).computations() if r["event"] == "computed"]


# ---- the profile cache, on its own: synthetic records, real files, locks and processes

def synthetic(seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    n = 2 * 12 * 7 * 2
    cols = {"phase": np.full(n, "profile"), "step": np.repeat(np.arange(1, 3, dtype=np.int32), n // 2),
            "layer": np.tile(np.repeat(np.arange(12, dtype=np.int16), 14), 2),
            "module": np.tile(np.repeat(np.array(["q_proj"] * 7), 2), 24),
            "matrix": np.tile(np.array(["A", "B"]), n // 2), "norm": rng.random(n).astype(np.float32),
            "rank": np.full(n, 8, dtype=np.int16), "scaling": np.full(n, 2.0, dtype=np.float32)}
    return Profile(cols, [{"phase": "profile", "step": 1, "reward": 0.5}], {"steps": 2})


WORKER = """
import sys, time
from grpo_rank.profile import ProfileCache
from tests.test_scale import synthetic

def compute(work_dir):
    time.sleep(1.5)  # long enough that every worker arrives while the first computes
    return synthetic()

profile, source = ProfileCache(sys.argv[1]).get_or_compute("k", compute)
print(source, profile.sha256)
"""


def test_concurrent_workers_compute_a_profile_once_and_read_the_same_bytes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    sources = sorted(o.split()[0] for o, _ in outs)
    assert sources == ["cache", "cache", "cache", "profiled"]
    assert len({o.split()[1] for o, _ in outs}) == 1
    assert len(computed(tmp_path)) == 1


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "no_manifest", "bad_manifest"])
def test_a_corrupt_entry_is_recomputed_never_used(tmp_path, damage):
    cache = ProfileCache(tmp_path)
    good, _ = cache.get_or_compute("k", lambda work: synthetic())
    entry = cache.entry("k")
    data = (entry / GRADS).read_bytes()
    if damage == "flip_a_byte":
        (entry / GRADS).write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        (entry / GRADS).write_bytes(data[: len(data) // 2])
    elif damage == "no_manifest":
        (entry / MANIFEST).unlink()  # as a copy interrupted before its last file would leave it
    else:
        (entry / MANIFEST).write_text("{not json")
    assert cache.load("k") is None
    calls = []
    again, source = cache.get_or_compute("k", lambda work: calls.append(work) or synthetic())
    assert source == "profiled" and len(calls) == 1
    assert again.sha256 == good.sha256  # the same records, stored again
    assert len(list(tmp_path.glob(".k.corrupt-*"))) == 1  # kept aside for a post-mortem
    assert len(computed(tmp_path)) == 2


# ---- launchers are config

@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "submitit_local", "joblib"])
def test_launchers_compose(launcher, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from .conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=[f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"])
    lc = cfg.hydra.launcher
    if launcher != "joblib":
        assert lc.submitit_folder == f"{tmp_path}/.submitit/%j"  # submitit's logs stay with the sweep
    if launcher == "slurm":
        assert (lc.cpus_per_task, lc.mem_gb, lc.gpus_per_node, lc.partition) == (1, 4, None, None)
        assert lc.max_num_timeout >= 1, "a preempted or timed-out job must requeue and resume"
        assert lc.timeout_min * 60 - lc.signal_delay_s > 60


def test_new_settings_are_typed():
    from grpo_rank.config import to_typed

    cfg = to_typed(compose("force=true", "grpo.save_steps=5", "profile.cache_dir=/tmp/p"))
    assert (cfg.force, cfg.grpo.save_steps, cfg.profile.cache_dir) == (True, 5, "/tmp/p")


# ---- real sweeps of the tiny model

PARALLEL = [*TINY, "strategy=proportional", "budget=full,reduced70", "lora.r_max=32,64", "seed=0",
            "tracking.mode=disabled"]


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, cache_dir):
    """Four jobs that need the same profile, started at once by the joblib launcher."""
    root = tmp_path_factory.mktemp("parallel")
    proc = run_cli(["grpo_rank.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *PARALLEL,
                    f"hydra.sweep.dir={root}/sweep"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_parallel_jobs_share_one_profile_computation(parallel):
    root, _ = parallel
    jobs = jobs_by_name(root / "sweep")
    assert len(jobs) == 4 and all(j.result["status"] == "ok" for j in jobs.values())
    profiles = [j.result["profile"] for j in jobs.values()]
    assert len({p["hash"] for p in profiles}) == 1
    assert sorted(p["source"] for p in profiles) == ["cache", "cache", "cache", "profiled"]
    assert len({p["sha256"] for p in profiles}) == 1  # every job read the same bytes
    runs = computed(root / "multirun" / ".profiles")  # the default cache: multirun/.profiles of the launch dir
    assert len(runs) == 1 and runs[0]["key"] == profiles[0]["hash"]
    # they ran at the same time: besides the one computing, at least one other had started and waited
    starts = [read_jsonl(j.path / RUNS)[0]["time"] for j in jobs.values()]
    assert sum(t < runs[0]["time"] for t in starts) >= 2
    # and every job's records hold the profile, whichever source it came from
    for j in jobs.values():
        assert j.grads["step"][j.grads["phase"] == "profile"].max() == 2
        assert [r["step"] for r in j.train_log if r["phase"] == "profile"] == [1, 2]


def test_same_budget_gets_the_same_allocation_from_the_shared_profile(parallel):
    root, _ = parallel
    by_budget: dict[tuple, list] = {}
    for j in jobs_by_name(root / "sweep").values():
        c = j.result["config"]
        by_budget.setdefault((c["budget"]["name"], c["lora"]["r_max"]), []).append(j.result["allocation"]["importance"])
    assert len(by_budget) == 4
    assert len({tuple(v[0]) for v in by_budget.values()}) == 1  # one profile, one importance


def test_parallel_sweep_prints_one_line_per_job(parallel):
    _, proc = parallel
    lines = summary_lines(proc.stdout)
    assert len(lines) == 4 and all(v.startswith("finished: accuracy") for v in lines.values()), proc.stdout


def test_corrupt_cache_entry_is_recomputed_by_the_next_job(parallel):
    root, _ = parallel
    cache = root / "multirun" / ".profiles"
    job = next(j for j in jobs_by_name(root / "sweep").values() if j.result["profile"]["source"] == "profiled")
    key = job.result["profile"]["hash"]
    grads = cache / key / GRADS
    data = grads.read_bytes()
    grads.write_bytes(data[:-64] + bytes(64))  # torn tail: the size is right, the bytes are not
    proc = run_cli(["grpo_rank.run", *[a for a in PARALLEL if "," not in a], "grpo.steps=1",
                    f"hydra.run.dir={root}/again"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = load_job(root / "again").result["profile"]
    assert again["source"] == "profiled" and again["hash"] == key
    assert again["sha256"] == job.result["profile"]["sha256"]  # recomputed to the very same bytes
    assert len(computed(cache)) == 2


FAILING = [*TINY, "strategy=uniform", "model.tiny.num_heads=3,4", "tracking.mode=disabled"]


@pytest.fixture(scope="module")
def failing(tmp_path_factory, cache_dir):
    """A sweep whose first job fails (64 hidden units do not split into 3 heads) and second finishes."""
    root = tmp_path_factory.mktemp("failing")
    cmd = ["grpo_rank.run", "-m", *FAILING, f"hydra.sweep.dir={root}/sweep"]
    result = root / "sweep" / "1_uniform_full_s0" / RESULT
    first = run_cli(cmd, cwd=root)
    mtimes = [result.stat().st_mtime_ns]
    second = run_cli(cmd, cwd=root)
    mtimes.append(result.stat().st_mtime_ns)
    forced = run_cli([*cmd, "force=true"], cwd=root)
    mtimes.append(result.stat().st_mtime_ns)
    return root / "sweep", first, second, forced, mtimes


def test_one_failing_job_does_not_lose_the_others(failing):
    sweep, first, _, _, _ = failing
    assert first.returncode == 1
    jobs = jobs_by_name(sweep)
    assert jobs["0_uniform_full_s0"].result["status"] == "failed"
    assert "hidden size (64) is not a multiple" in (sweep / "0_uniform_full_s0" / "error.txt").read_text()
    assert jobs["1_uniform_full_s0"].result["status"] == "ok"
    lines = summary_lines(first.stdout)
    assert lines["0_uniform_full_s0"].startswith("failed: ValueError: The hidden size (64) is not a multiple")
    assert lines["1_uniform_full_s0"].startswith("finished: accuracy")
    assert "1 of 2 jobs did not finish" in first.stderr


def test_rerun_skips_the_finished_job_and_reruns_the_failed_one(failing):
    sweep, _, second, _, mtimes = failing
    assert second.returncode == 1  # the failed job ran again, and failed again
    lines = summary_lines(second.stdout)
    assert lines["1_uniform_full_s0"].startswith("skipped")
    assert lines["0_uniform_full_s0"].startswith("failed")
    assert mtimes[1] == mtimes[0]  # result.json untouched: nothing trained
    events = [e["event"] for e in read_jsonl(sweep / "1_uniform_full_s0" / RUNS)]
    assert events[:4] == ["started", "finished", "skipped", "started"]  # the 4th launch: force=true
    assert [e["event"] for e in read_jsonl(sweep / "0_uniform_full_s0" / RUNS)][:4] == [
        "started", "failed", "started", "failed"]


def test_force_reruns_a_finished_job(failing):
    sweep, _, _, forced, mtimes = failing
    assert summary_lines(forced.stdout)["1_uniform_full_s0"].startswith("finished")
    assert mtimes[2] > mtimes[1]
    assert read_jsonl(sweep / "1_uniform_full_s0" / RUNS)[-1]["event"] == "finished"


def test_a_finished_job_with_another_config_is_not_skipped(failing, tmp_path):
    from grpo_rank.sweep import finished_result

    sweep, *_ = failing
    job = load_job(sweep / "1_uniform_full_s0").result
    assert finished_result(sweep / "1_uniform_full_s0", job["job"]["config_hash"]) is not None
    assert finished_result(sweep / "1_uniform_full_s0", "another") is None


# ---- slow: the 9-job sweep, and Slurm

NINE = [*TINY, "strategy=uniform,proportional,random", "seed=0,1,2", "tracking.mode=disabled"]


@pytest.mark.slow
def test_nine_job_sweep_profiles_once_per_seed_and_never_again(tmp_path, cache_dir):
    first = run_cli(["grpo_rank.run", "-m", *NINE, f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    cache = tmp_path / "multirun" / ".profiles"
    runs = computed(cache)
    seeds = {load_job(Path(r["computed_by"])).result["job"]["seed"] for r in runs}
    assert len(runs) == 3 and seeds == {0, 1, 2}  # only proportional profiles, once per seed
    # another sweep at another budget needs the same three profiles: none is computed again
    second = run_cli(["grpo_rank.run", "-m", *NINE, "budget=reduced70", f"hydra.sweep.dir={tmp_path}/b"],
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(computed(cache)) == 3
    sources = [j.result["profile"]["source"] for j in jobs_by_name(tmp_path / "b").values()
               if j.result["job"]["strategy"] == "proportional"]
    assert sources == ["cache"] * 3
    # and rerunning the first sweep trains nothing
    third = run_cli(["grpo_rank.run", "-m", *NINE, f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path)
    assert third.returncode == 0
    assert all(v.startswith("skipped") for v in summary_lines(third.stdout).values())
    assert len(summary_lines(third.stdout)) == 9


def _slurm_up() -> bool:
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in out


requires_slurm = pytest.mark.skipif(not _slurm_up(), reason="no Slurm: bash ../shared/slurm/local-slurm.sh start")

# 8 steps with a checkpoint every 2: room to preempt one job mid-training
SLURM_SWEEP = [*TINY, "strategy=uniform,proportional,random", "seed=0", "grpo.steps=8", "grpo.save_steps=2",
               "tracking.mode=disabled"]


def preempt_one_job(sweep_dir: Path, proc: subprocess.Popen, timeout: float = 600) -> tuple[Path, str]:
    """Preempts the first job seen past a checkpoint, as Slurm would: SIGTERM, then USR2 (what
    submitit's own Job._interrupt sends). Returns its folder and Slurm job id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for job in sorted(sweep_dir.glob("*_s0")):
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
    resumed = load_job(preempted).result["train"]["resumed_from_step"]
    assert resumed and resumed >= 2
    assert (tmp_path / "slurm" / ".submitit").is_dir()  # submitit's logs under the sweep

    # every job equals its local twin: allocation, accuracy and every gradient record
    local_jobs, slurm_jobs = jobs_by_name(tmp_path / "local"), jobs_by_name(tmp_path / "slurm")
    assert sorted(local_jobs) == sorted(slurm_jobs)
    for name, lj in local_jobs.items():
        sj = slurm_jobs[name]
        assert sj.result["status"] == "ok"
        assert sj.result["allocation"] == lj.result["allocation"], name
        assert sj.result["eval"] == lj.result["eval"], name
        assert set(sj.grads) == set(lj.grads)
        for col in lj.grads:
            assert np.array_equal(sj.grads[col], lj.grads[col]), (name, col)
        steps = sj.grads["step"][sj.grads["phase"] == "train"]
        assert np.unique(steps).tolist() == list(range(1, 9))
    assert json.loads((preempted / RESULT).read_text())["job"]["run_id"]
