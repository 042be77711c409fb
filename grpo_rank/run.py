"""The command line: one job, or a sweep of them, of the study (what a job computes is job.py).

    python -m grpo_rank.run                                     # one job, the offline CPU default
    python -m grpo_rank.run -m strategy=uniform,proportional,random seed=0,1,2   # the sweep
    python -m grpo_rank.run strategy=proportional dry_run=true profile.from_run=<job dir>
    python -m grpo_rank.run -m experiment=paper strategy=none,uniform,proportional,random seed=0,1,2
    python -m grpo_rank.run -m hydra/launcher=slurm strategy=uniform,proportional,random seed=0,1,2
    grpo-rank run ...                                           # the same, installed (cli.py)

Each job writes result.json, grad_norms.parquet, train_log.jsonl and eval_outcomes.jsonl into its
Hydra job folder (see records.py) and mirrors them to one W&B run. Launched again into the same folder
(the same command with the same hydra.sweep.dir, or a Slurm requeue), a finished job is skipped
(`force=true` reruns it) and an unfinished one resumes from its last checkpoint (`grpo.save_steps`).

Bad input (a config value, a data file, a model path, an earlier run's folder, an infeasible budget)
is reported in one line naming the field or file and the fix, before any model loads, with exit
status 2; in a multirun that job is recorded as failed and the sweep goes on. HYDRA_FULL_ERROR=1 also
prints the traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from grpo_rank.config.schema import RunConfig, to_typed
from grpo_rank.config.validate import validate
from grpo_rank.errors import InputError, one_line, run_cli, traceback_requested
from grpo_rank.pipeline.preflight import fit_full_weight, preflight
from grpo_rank.pipeline.tracking import identity, job_key
from grpo_rank.runtime import malloc, threads
from grpo_rank.sweep import (
    naming,  # importing naming registers the job-folder resolver conf/config.yaml uses
    order,  # noqa: F401 - registers the default launcher's jobs-at-once resolver
)
from grpo_rank.sweep.runlog import finished_detail, record, should_skip

log = logging.getLogger("grpo_rank")


def prepare(cfg: DictConfig, launch_dir: str | Path | None = None) -> RunConfig:
    """The composed config as a checked RunConfig: typed, cross-field rules, and every input that can be
    checked before a model loads (data files, model paths, from_run folders, budgets); the full-weight signal
    turned off (one line on stderr, and in `cfg`) where it would not fit the device. Raises InputError."""
    typed = to_typed(cfg)
    # a relative cache is the launch directory's, also for a job that Slurm starts elsewhere
    cache = Path(typed.profile.cache_dir)
    if launch_dir is not None and not cache.is_absolute():
        typed.profile.cache_dir = str(Path(launch_dir) / cache)
    validate(typed)
    preflight(typed)
    off = fit_full_weight(typed)
    if off:  # the record's config says what ran
        print(f"grpo-rank: {off}", file=sys.stderr)
        with open_dict(cfg):
            cfg.profile.full_weight = False
    return typed


def sweep_size(sweep_dir: Path) -> int:
    """How many jobs the sweep in `sweep_dir` has, from the overrides Hydra wrote to its multirun.yaml."""
    try:
        return max(1, len(naming.expand_sweep(sweep_dir)[0]))
    except Exception:  # noqa: BLE001 - no readable multirun.yaml: count this job alone
        return 1


def thread_plan(cfg: RunConfig, hc, job_dir: Path) -> threads.ThreadPlan:
    cores = threads.available_cores()
    launcher = OmegaConf.to_container(hc.launcher, resolve=True) if hc.mode == RunMode.MULTIRUN else {}
    size = sweep_size(job_dir.parent) if hc.mode == RunMode.MULTIRUN else 1
    name, parallel = threads.launcher_parallelism(launcher, size, cores)
    return threads.plan_threads(cfg.threads, name, parallel, cores, dict(os.environ))


def _bad_input(job_dir: Path, exc: InputError, multirun: bool) -> None:
    line = one_line(exc)
    print(f"grpo-rank: {line}", file=sys.stderr)
    if traceback_requested():
        logging.exception("bad input")
    # a launch of its own, so that the sweep's summary names this job and the line
    record(job_dir, "started")
    record(job_dir, "failed", detail=line)
    if not multirun:
        sys.exit(2)


def config_dir() -> str:
    """The Hydra configs: grpo_rank/conf in an installed copy (the wheel ships the top-level conf/ there),
    else the checkout's own conf/ beside the package. Absolute, so it holds from any working directory."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return str(shipped if shipped.is_dir() else package.parent / "conf")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # transformers 5 renames (gradient -> activation checkpointing) warn on every step; not ours to fix
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        typed = prepare(cfg, hc.runtime.cwd)
    except InputError as exc:
        return _bad_input(job_dir, exc, multirun)
    ident, key = identity(typed, job_dir), job_key(typed)
    # every launch records the job's key: a later, larger sweep finds this folder by it (sweep/naming.py)
    if should_skip(job_dir, ident.config_hash, typed.force, key):
        print(f"{ident.name}: skipped, already finished -> {job_dir}")
        return

    plan = thread_plan(typed, hc, job_dir)
    threads.apply(plan)  # before torch is imported, which the next line does
    # measured: importing torch/transformers/TRL/PEFT takes ~9 s here, so bad input is reported before it
    from grpo_rank.pipeline import launch
    from grpo_rank.pipeline.job import run_job

    record(job_dir, "started", job_key=key)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if typed.distributed.processes > 1:  # the same job in N workers of this node (distributed.py)
            result = launch.launch_job(typed, job_dir, resolved, plan)
        else:
            result = run_job(typed, job_dir, resolved, plan)
    except InputError as exc:  # knowable only once the model is there (e.g. its layer count vs a profile)
        return _bad_input(job_dir, exc, multirun)
    except Exception as exc:
        record(job_dir, "failed", detail=one_line(exc))
        if not multirun:
            raise
        # the traceback is in error.txt and this job's log; the sweep goes on and its summary says failed
        log.error("job %s failed; the other jobs go on", job_dir, exc_info=True)
        return
    except BaseException as exc:  # killed from inside Python (Slurm preemption, Ctrl-C): resumable later
        record(job_dir, "interrupted", detail=type(exc).__name__)
        raise
    if result.status == "dry_run":
        record(job_dir, "dry_run", detail="allocation only, nothing trained")
        return
    record(job_dir, "finished", detail=finished_detail(result))
    shutil.rmtree(job_dir / "trainer_train", ignore_errors=True)  # checkpoints are done with once recorded
    if result.eval:
        ev = result.eval
        print(f"{ident.name}: accuracy {ev.accuracy:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] n={ev.n}  -> {job_dir}")


def command(argv: list[str]) -> int:
    """`grpo-rank run ARGS...`: Hydra reads its arguments from sys.argv, so they are put there."""
    sys.argv = ["grpo-rank run", *argv]
    run_cli(main)
    return 0


if __name__ == "__main__":
    malloc.restart_tuned()  # glibc kept from paying page faults for every step's tensors (runtime/malloc.py)
    run_cli(main)  # Hydra's own composition errors, too, as one line and exit status 2
