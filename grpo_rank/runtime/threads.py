"""How many CPU threads a job's torch may use: its share of the cores, from the launcher.

Two torch processes that each take every core oversubscribe badly (measured on 2 cores: a tiny GRPO
step took 28 s beside another torch process at the default thread count, 0.34 s at one thread each).
So each job takes `threads` when set, else `OMP_NUM_THREADS` when the user set it, else the CPUs Slurm
gave it (`SLURM_CPUS_PER_TASK`), else the
cores divided by the number of jobs its launcher runs side by side (joblib's `n_jobs`,
submitit_local's whole sweep up to `array_parallelism`, one for the basic launcher). `apply` sets it
before torch starts work (the OpenMP variables must be set before torch is imported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_applied: str | None = None  # what `apply` last set in this process: the next job's env, not the user's


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    source: str  # threads setting | SLURM_CPUS_PER_TASK | <launcher> sharing N cores among K jobs | ...


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_threads(explicit: int | None, launcher: str, parallel_jobs: int, cores: int,
                 env: dict[str, str]) -> ThreadPlan:
    """Pure: the thread count for one job. `launcher` is the Hydra launcher's short name (basic, joblib,
    submitit_local, submitit_slurm); `parallel_jobs` how many jobs it runs at once on this machine."""
    if explicit is not None:
        return ThreadPlan(explicit, "threads setting")
    user = env.get("OMP_NUM_THREADS", "")
    if user.isdigit() and int(user) > 0 and user != _applied:
        return ThreadPlan(int(user), "OMP_NUM_THREADS")
    slurm = env.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return ThreadPlan(int(slurm), "SLURM_CPUS_PER_TASK")
    k = max(1, parallel_jobs)
    return ThreadPlan(max(1, cores // k), f"{launcher}: {cores} cores shared by {k} parallel job(s)")


def launcher_parallelism(launcher_cfg: dict, sweep_size: int, cores: int) -> tuple[str, int]:
    """(launcher short name, jobs it runs side by side on one machine) from hydra.launcher's config."""
    target = str(launcher_cfg.get("_target_", ""))
    if "Joblib" in target:
        n = int(launcher_cfg.get("n_jobs") or 1)
        return "joblib", cores if n < 0 else n
    if "LocalLauncher" in target:  # submitit_local starts every job of the sweep at once
        return "submitit_local", max(1, min(sweep_size, int(launcher_cfg.get("array_parallelism") or sweep_size)))
    if "SlurmLauncher" in target:
        return "submitit_slurm", 1
    return "basic", 1


def apply(plan: ThreadPlan) -> None:
    """Before torch is imported, the OpenMP/MKL variables; after, torch's own setting too."""
    global _applied
    for var in THREAD_VARS:
        os.environ[var] = str(plan.threads)
    _applied = str(plan.threads)
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(plan.threads)
