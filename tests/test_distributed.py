"""One job across processes, for real: 2 CPU workers (gloo) started by the job itself, as on a GPU node.

With a deterministic objective (algorithm=sft: no sampling) a 2-process job of per-device batch b has the
same records as a 1-process job of batch 2b, to float tolerance: DDP averages the LoRA gradients and
distributed.py averages the frozen weights' gradients, before the profiler takes any norm. GRPO's
completions are sampled per process, so its 2-process job is checked for what holds regardless: a
profile computed collectively through the cache, every step recorded once, by rank 0 alone.

    python -m pytest -q -m slow tests/test_distributed.py    # the 2-process jobs (~1.5 min); the rest without -m
"""

from __future__ import annotations

import numpy as np
import pytest

from grpo_rank.config.schema import ConfigError, result_payload
from grpo_rank.config.validate import validate
from grpo_rank.record.files import RUNS, read_jsonl
from tests.conftest import TINY, JobFiles, run_cli, typed

STEPS = 3
SFT = [*TINY, "algorithm=sft", "strategy=uniform", f"grpo.steps={STEPS}", "tracking.mode=offline"]


def run(tmp_path, name: str, *args: str) -> JobFiles:
    out = run_cli(["grpo_rank.run", *args, f"profile.cache_dir={tmp_path}/profiles_{name}",
                   f"hydra.run.dir={tmp_path}/{name}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return JobFiles(tmp_path / name)


@pytest.fixture(scope="module")
def sft_jobs(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("ddp")
    one = run(root, "one", *SFT, "grpo.per_device_batch_size=4")
    two = run(root, "two", *SFT, "grpo.per_device_batch_size=2", "distributed.processes=2")
    return one, two


@pytest.mark.slow
def test_two_processes_record_what_one_process_of_the_same_global_batch_records(sft_jobs):
    one, two = sft_jobs
    g, h = one.grads, two.grads
    assert set(h["matrix"].astype(str)) == {"A", "B", "W"}  # LoRA matrices and the full-weight signal
    for col in ("phase", "step", "layer", "module", "matrix", "rank", "scaling"):
        assert np.array_equal(g[col], h[col]), col
    assert np.allclose(h["norm"], g["norm"], rtol=1e-4, atol=0)
    # the one-process run's own noise floor is 0 (it is deterministic): the tolerance is for summation order
    assert not np.array_equal(h["norm"], np.zeros_like(h["norm"]))
    losses = [[r["loss"] for r in job.train_log if r["phase"] == "train"] for job in (one, two)]
    assert len(losses[1]) == STEPS and np.allclose(losses[0], losses[1], rtol=1e-5)
    assert one.result.train.importance == pytest.approx(two.result.train.importance, rel=1e-4)


@pytest.mark.slow
def test_only_rank_zero_writes_and_evaluates(sft_jobs):
    _, two = sft_jobs
    assert [r["step"] for r in two.train_log] == list(range(1, STEPS + 1))  # each step once, not once per rank
    assert len(two.outcomes) == two.result.eval.n == 8
    assert [e["event"] for e in read_jsonl(two.path / RUNS)] == ["started", "finished"]
    assert len(list((two.path / "wandb").glob("offline-run-*"))) == 1
    assert two.result.status == "ok" and "split among 2 processes" in two.result.runtime.threads_source
    assert "[rank 0]" in (two.path / "run.log").read_text()


@pytest.mark.slow
def test_two_process_grpo_profiles_collectively_and_records_each_step_once(tmp_path, cache_dir):
    job = run(tmp_path, "grpo", *TINY, "strategy=proportional", "grpo.per_device_batch_size=2",
              "distributed.processes=2", "tracking.mode=disabled")
    assert job.result.status == "ok" and job.result.profile.source == "profiled"
    g = job.grads
    for phase, steps in (("profile", 2), ("train", 2)):
        counts = np.unique(g["step"][g["phase"] == phase], return_counts=True)
        assert counts[0].tolist() == list(range(1, steps + 1)), phase
        assert len(set(counts[1].tolist())) == 1, phase
    assert [(r["phase"], r["step"]) for r in job.train_log] == [("profile", 1), ("profile", 2),
                                                                ("train", 1), ("train", 2)]
    assert sum(job.result.allocation.ranks) == job.result.allocation.budget_total


def test_process_count_is_part_of_the_identity_only_when_it_is_not_one():
    cfg = typed(*TINY)
    assert "distributed" not in result_payload(cfg, "job")  # jobs recorded before the setting keep their id
    cfg.distributed.processes = 2
    assert result_payload(cfg, "job")["distributed"] == {"processes": 2}
    assert result_payload(cfg, "profile")["distributed"] == {"processes": 2}


@pytest.mark.parametrize("overrides, field", [
    (("distributed.processes=2", "profile.per_reward=true", "algorithm=grpo"), "profile.per_reward"),
    (("distributed.processes=3", "grpo.per_device_batch_size=2", "grpo.num_generations=4"),
     "grpo.per_device_batch_size"),
])
def test_distributed_settings_that_cannot_run_fail_in_one_line(overrides, field):
    with pytest.raises(ConfigError) as err:
        validate(typed(*TINY, *overrides))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_gpu8_profile_holds_a_node_and_trains_in_eight_processes(tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=["resources=gpu8", f"hydra.sweep.dir={tmp_path}"])
    lc = cfg.hydra.launcher
    assert lc._target_.endswith("SlurmLauncher")
    assert (lc.partition, lc.gpus_per_node, lc.tasks_per_node, lc.cpus_per_task) == ("gpu", 8, 1, 64)
    assert cfg.distributed.processes == lc.gpus_per_node  # one process per GPU, all in the one Slurm task
    validate(typed("resources=gpu8"))  # the default batch (8 x 8 completions a round) is valid


def test_a_rank_from_the_environment_does_not_make_a_one_process_job_a_worker(monkeypatch):
    from grpo_rank.runtime import distributed

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.is_main() and distributed.world_size() == 1  # not started by launch_job: writes
    monkeypatch.setenv(distributed.WORKER_ENV, "1")
    assert not distributed.is_main() and distributed.world_size() == 4
