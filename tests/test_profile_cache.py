"""The profile cache: one computation per key across concurrent processes, every kind of damage to an
entry detected and recomputed (never used), and jobs of a real parallel sweep sharing one profile.

    python -m pytest -q tests/test_profile_cache.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.profiling.cache import MANIFEST, Profile, ProfileCache, profile_key
from grpo_rank.record.files import GRADS, RUNS, read_grad_records, read_jsonl
from grpo_rank.record.result import read_result
from tests.conftest import ONE_THREAD, ROOT, TINY, job_folders, jobs_by_arm, run_cli, summary_lines, typed


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
from grpo_rank.profiling.cache import ProfileCache
from tests.test_profile_cache import synthetic

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


DAMAGES = ["flip_a_byte", "truncate", "no_manifest", "bad_manifest", "manifest_is_null", "manifest_lacks_parquet",
           "meta_edited", "manifest_key_edited"]


@pytest.mark.parametrize("damage", DAMAGES)
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
    elif damage == "bad_manifest":
        (entry / MANIFEST).write_text("{not json")
    elif damage == "manifest_is_null":
        (entry / MANIFEST).write_text("null")
    else:
        manifest = json.loads((entry / MANIFEST).read_text())
        if damage == "manifest_lacks_parquet":
            del manifest["files"][GRADS]
        elif damage == "meta_edited":  # what a later job reads from the manifest is covered too
            manifest["meta"]["steps"] = 99
        else:
            manifest["key"] = "other"
        (entry / MANIFEST).write_text(json.dumps(manifest))
    assert cache.load("k") is None
    calls = []
    again, source = cache.get_or_compute("k", lambda work: calls.append(work) or synthetic())
    assert source == "profiled" and len(calls) == 1
    assert again.sha256 == good.sha256  # the same records, stored again
    assert len(list(tmp_path.glob(".k.corrupt-*"))) == 1  # kept aside for a post-mortem
    assert cache.load("k").meta == {"steps": 2}
    assert len(computed(tmp_path)) == 2


PARALLEL = [*TINY, "strategy=proportional", "budget=full,reduced70", "lora.r_max=32,64", "seed=0",
            "tracking.mode=disabled"]


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, cache_dir):
    """Four jobs that need the same profile, started at once by the joblib launcher. Slow (make test-slow):
    the default run has compute-once in test_concurrent_workers_compute_a_profile_once_and_read_the_same_bytes."""
    root = tmp_path_factory.mktemp("parallel")
    proc = run_cli(["grpo_rank.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *PARALLEL,
                    f"hydra.sweep.dir={root}/sweep"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


@pytest.mark.slow
def test_parallel_jobs_share_one_profile_computation(parallel):
    root, _ = parallel
    folders = job_folders(root / "sweep")
    results = {name: read_result(path) for name, path in folders.items()}
    assert len(results) == 4 and all(r.status == "ok" for r in results.values())
    profiles = [r.profile for r in results.values()]
    assert len({p.key for p in profiles}) == 1
    assert sorted(p.source for p in profiles) == ["cache", "cache", "cache", "profiled"]
    assert len({p.sha256 for p in profiles}) == 1  # every job read the same bytes
    runs = computed(root / "multirun" / ".profiles")  # the default cache: multirun/.profiles of the launch dir
    assert len(runs) == 1 and runs[0]["key"] == profiles[0].key
    # they ran at the same time: besides the one computing, at least one other had started and waited
    starts = [read_jsonl(path / RUNS)[0]["time"] for path in folders.values()]
    assert sum(t < runs[0]["time"] for t in starts) >= 2
    # and every job's records hold the profile, whichever source it came from
    for path in folders.values():
        grads = read_grad_records(path / GRADS)
        assert grads["step"][grads["phase"] == "profile"].max() == 2
        assert [r["step"] for r in read_jsonl(path / "train_log.jsonl") if r["phase"] == "profile"] == [1, 2]


@pytest.mark.slow
def test_same_budget_gets_the_same_allocation_from_the_shared_profile(parallel):
    root, _ = parallel
    by_budget: dict[tuple, list] = {}
    for path in job_folders(root / "sweep").values():
        r = read_result(path)
        by_budget.setdefault((r.job.budget, r.allocation.r_max), []).append(r.allocation.importance)
    assert len(by_budget) == 4
    assert len({tuple(v[0]) for v in by_budget.values()}) == 1  # one profile, one importance


@pytest.mark.slow
def test_parallel_sweep_prints_one_line_per_job(parallel):
    _, proc = parallel
    lines = summary_lines(proc.stdout)
    assert len(lines) == 4 and all(v.startswith("finished: accuracy") for v in lines.values()), proc.stdout


@pytest.mark.slow
def test_corrupt_cache_entry_is_recomputed_by_the_next_job(parallel):
    root, _ = parallel
    cache = root / "multirun" / ".profiles"
    job = next(r for r in map(read_result, job_folders(root / "sweep").values()) if r.profile.source == "profiled")
    key = job.profile.key
    grads = cache / key / GRADS
    data = grads.read_bytes()
    grads.write_bytes(data[:-64] + bytes(64))  # torn tail: the size is right, the bytes are not
    proc = run_cli(["grpo_rank.run", *[a for a in PARALLEL if "," not in a], "grpo.steps=1",
                    f"hydra.run.dir={root}/again"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = read_result(root / "again").profile
    assert again.source == "profiled" and again.key == key
    assert again.sha256 == job.profile.sha256  # recomputed to the very same bytes
    assert len(computed(cache)) == 2


def test_per_rank_shares_only_the_uniform_profile_key_with_fixed():
    """per_rank sets alpha * r(l) / lora.r: at lora.r everywhere that is fixed alpha, so the key is shared;
    at any other ranks, or under rslora (alpha / sqrt(r)), the gradients differ and so do the keys."""
    fixed, per_rank, rslora = (typed("model=tiny", f"lora.alpha_mode={m}") for m in ("fixed", "per_rank", "rslora"))
    uniform, plan = [8] * 12, [4, 12] * 6
    assert profile_key(per_rank, uniform, 2) == profile_key(fixed, uniform, 2)
    assert profile_key(per_rank, plan, 2) != profile_key(fixed, plan, 2)
    assert profile_key(rslora, uniform, 2) != profile_key(fixed, uniform, 2)
    assert profile_key(per_rank, uniform, 3) != profile_key(fixed, uniform, 2)


def test_a_per_rank_job_allocates_from_the_fixed_uniform_runs_profile(tiny_sweep, tmp_path):
    """The CPU study runs no per_rank uniform arm: its proportional jobs read the profile the fixed uniform
    run published, without profiling, and allocate the ranks the fixed proportional job got."""
    sweep_dir, _ = tiny_sweep
    fixed = read_result(jobs_by_arm(sweep_dir)[("proportional", "full", 0)])
    before = computed(sweep_dir.parent / "profiles")
    proc = run_cli(["grpo_rank.run", *TINY, "strategy=proportional", "seed=0", "lora.alpha_mode=per_rank",
                    "tracking.mode=disabled", f"hydra.run.dir={tmp_path}/job",
                    f"profile.cache_dir={sweep_dir.parent}/profiles"], cwd=tmp_path, env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(tmp_path / "job")
    assert (result.profile.source, result.profile.key) == ("cache", fixed.profile.key)
    assert result.allocation.ranks == fixed.allocation.ranks and result.allocation.importance == fixed.allocation.importance
    assert computed(sweep_dir.parent / "profiles") == before
