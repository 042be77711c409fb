"""The order of a sweep's jobs: the jobs that read a profile (proportional, shuffled) after every other job.
The default sweeper (conf/hydra/sweeper/ordered.yaml) is Hydra's basic one with this order; Hydra takes
plugins only from its `hydra_plugins` namespace, so the class is hydra_plugins/grpo_rank_sweeper/ordered.py.

A uniform job whose training is the profile publishes it under the profile cache's lock (training/profile.py);
a proportional job of the same seed that comes later waits on that lock or reads the entry. Were it launched
first, beside its uniform twin (two jobs at a time by default, conf/hydra/launcher/local.yaml), it could take
the lock first and train the same uniform run itself, and the uniform job would then train it again. With the
readers last, each reader starts only after a job has finished, by when its twin has long taken the lock. The
order changes nothing a job computes: job folders are named by their keys, not their position (naming.py).

Importing this module also registers `grpo_rank_local_jobs`, the default launcher's number of jobs at once.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.runtime.device import local_jobs, visible_gpus
from grpo_rank.runtime.threads import available_cores
from grpo_rank.sweep.overrides import parse_overrides

LOCAL_JOBS = "grpo_rank_local_jobs"  # conf/hydra/launcher/local.yaml's n_jobs


def reads_profile(job: list[str]) -> bool:
    """Whether a job (its overrides) names a strategy that allocates from a profile."""
    strategy = STRATEGIES.get(parse_overrides(job).get("strategy", ""))
    return bool(strategy and strategy.needs_profile)


def profile_readers_last(jobs: list[list[str]]) -> list[list[str]]:
    """The jobs in sweep order, those that read a profile moved after the rest (a stable sort)."""
    return sorted(jobs, key=reads_profile)


if not OmegaConf.has_resolver(LOCAL_JOBS):
    OmegaConf.register_new_resolver(LOCAL_JOBS, lambda: local_jobs(available_cores(), visible_gpus()))
