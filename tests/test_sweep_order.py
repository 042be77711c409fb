"""The default way a sweep runs here: two jobs side by side (one with a GPU), and the jobs that read a profile
launched after the ones that publish it (conf/hydra/launcher/local.yaml, conf/hydra/sweeper/ordered.yaml).

    OMP_NUM_THREADS=1 python -m pytest tests/test_sweep_order.py -q
"""

from __future__ import annotations

import re

from grpo_rank.runtime.device import local_jobs, visible_gpus
from grpo_rank.runtime.threads import available_cores
from grpo_rank.sweep.order import profile_readers_last
from tests.conftest import CONF, TINY, run_cli


def test_readers_of_a_profile_go_last_in_a_stable_order():
    jobs = [[f"seed={s}", f"strategy={st}"] for s in (0, 1) for st in ("proportional", "uniform", "shuffled", "random")]
    ordered = profile_readers_last(jobs)
    assert [j[1].split("=")[1] for j in ordered] == ["uniform", "random"] * 2 + ["proportional", "shuffled"] * 2
    assert [j[0] for j in ordered[:4]] == ["seed=0", "seed=0", "seed=1", "seed=1"]
    assert profile_readers_last([["seed=0"], ["seed=1"]]) == [["seed=0"], ["seed=1"]]  # no strategy swept


def test_jobs_at_once_follow_the_machine(tmp_path):
    assert (local_jobs(2, 0), local_jobs(16, 0), local_jobs(1, 0), local_jobs(16, 1)) == (2, 2, 1, 1)
    driver = tmp_path / "gpus"
    assert visible_gpus({}, driver) == 0
    for name in ("0000:01:00.0", "0000:02:00.0"):
        (driver / name).mkdir(parents=True)
    assert visible_gpus({}, driver) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}, driver) == 1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, driver) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, driver) == 0


def test_the_default_launcher_and_sweeper(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import grpo_rank.config.schema  # noqa: F401 - registers the schema conf/config.yaml starts from
    import grpo_rank.sweep.order  # noqa: F401 - registers the launcher's resolver, as run.py does

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True, overrides=[f"hydra.sweep.dir={tmp_path}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("JoblibLauncher")
    assert launcher["n_jobs"] == local_jobs(available_cores(), visible_gpus())
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.grpo_rank_sweeper.ordered.OrderedSweeper"


def test_a_sweep_launches_the_uniform_jobs_first(tmp_path):
    """Swept as proportional first, the uniform jobs are launched first (what Hydra logs as #0, #1, ...)."""
    proc = run_cli(["grpo_rank.run", "-m", *TINY, "seed=0,1", "strategy=proportional,uniform", "dry_run=true",
                    "tracking.mode=disabled", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, timeout=600)
    launched = re.findall(r"#(\d+) : .*?seed=(\d) strategy=(\w+)", proc.stdout + proc.stderr)
    assert [(int(n), f"{st}-{s}") for n, s, st in launched] == [
        (0, "uniform-0"), (1, "uniform-1"), (2, "proportional-0"), (3, "proportional-1")]
