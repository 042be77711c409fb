"""A Slurm sweep ends even when Slurm drops a task before it starts.

    python -m grpo_rank.run -m hydra/launcher=slurm strategy=uniform,random seed=0,1   # then: scancel <array>_3

An array task cancelled while it waits in the queue leaves no accounting row in Slurm 22.05: sacct lists
its array but not it, and squeue no longer lists it. submitit reads job states only from sacct, so
hydra-submitit-launcher would wait for that task forever. `SlurmQueueWatch`, a Hydra callback
(conf/config.yaml), watches a Slurm sweep's submissions while the launcher waits. A task of this launch
without a result that neither sacct nor squeue lists, on two looks `interval_s` apart, is recorded as
failed in its job folder (runs.jsonl: `submitted` with its Slurm ids and overrides, then `failed` and
why; the folder is the one the job would have had, found as naming.py finds it) and its result is
handed to the launcher in submitit's own result file. The launcher then goes on to the other jobs, the
sweep ends with its summary (that job failed, exit status 1), and `grpo_rank.status` says the same.
Launching the sweep again runs the job.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from grpo_rank.sweep.naming import config_key, job_dir_name, job_folder, swept_keys
from grpo_rank.sweep.runlog import record
from grpo_rank.sweep.status import Submission, removed, slurm_states, submission_overrides, submissions

log = logging.getLogger(__name__)

INTERVAL_S = 10.0  # between two looks at the queue: one sacct and one squeue call each


def result_file(sub: Submission) -> Path:
    """Where submitit writes the task's result, and where its launcher waits for it."""
    from submitit.core.utils import JobPaths

    return JobPaths(sub.pickle.parent, job_id=sub.slurm_id, task_id=0).result_pickle


def queued_ids() -> set[str] | None:
    """Every job and array task of this user the controller still knows (any state, one id per task);
    None when squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--me", "--states=all", "--format=%i"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def dropped(sweep_dir: Path, since: float) -> list[Submission]:
    """The sweep's tasks submitted at or after `since`, without a result, that neither sacct (which lists
    their array) nor squeue lists: Slurm dropped them, and nothing will ever run them or write a result."""
    waiting = {s.slurm_id: s for s in submissions(sweep_dir) if s.submitted >= since and not result_file(s).exists()}
    if not waiting:
        return []
    gone = removed(set(waiting), slurm_states(set(waiting)))
    queued = queued_ids() if gone else None
    if queued is None:  # no squeue answer: nothing is concluded from sacct alone
        return []
    return [waiting[i] for i in sorted(gone - queued)]


def slurm_fields(slurm_id: str) -> dict[str, str]:
    """The task's ids as runlog.record names them for a job that ran."""
    array, _, task = slurm_id.partition("_")
    return {"slurm_array_job_id": array, "slurm_array_task_id": task} if task else {"slurm_job_id": slurm_id}


def end_dropped(sub: Submission, sweep_dir: Path, config_name: str) -> Path | None:
    """Records the dropped task as a failed job in its folder and hands the launcher its result."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import cloudpickle_dump, temporary_save_path

    why = f"slurm {sub.slurm_id} left the queue without running (cancelled while pending); launch the sweep again to run it"
    overrides = submission_overrides(sub)
    folder = None
    if overrides is not None:
        name = job_dir_name(overrides, swept_keys(sweep_dir))
        folder = sweep_dir / job_folder(sweep_dir, name, lambda: _composed_key(config_name, overrides))
        record(folder, "submitted", overrides=overrides, **slurm_fields(sub.slurm_id))
        record(folder, "failed", detail=why)
    print(f"grpo-rank: {why} (recorded in {folder or 'no job folder: its submission is unreadable'})",
          file=sys.stderr, flush=True)
    # the launcher reads a job's return from this file; COMPLETED with nothing, like a job that recorded its failure
    done = JobReturn(overrides=overrides, working_dir=str(folder) if folder else None, task_name="run",
                     status=JobStatus.COMPLETED)
    with temporary_save_path(result_file(sub)) as tmp:
        cloudpickle_dump(("success", done), tmp)
    return folder


def _composed_key(config_name: str, overrides: list[str]) -> str:
    """The job's key from its config composed as the job would have (Hydra is initialised in this process)."""
    from hydra import compose

    return config_key(compose(config_name=config_name, overrides=list(overrides)))


class SlurmQueueWatch(Callback):
    """Registered for every run; it watches only a multirun whose launcher is Slurm's (submitit)."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = float(interval_s)
        self._stop: threading.Event | None = None

    def __getstate__(self) -> dict:
        # the launcher pickles its callbacks into every Slurm task: they carry the setting, not the watch
        return {"interval_s": self.interval_s, "_stop": None}

    def on_multirun_start(self, config, **kwargs) -> None:
        if not str(config.hydra.launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            return
        self._stop = threading.Event()
        sweep_dir, name = Path(str(config.hydra.sweep.dir)), str(config.hydra.job.config_name)
        args = (sweep_dir, name, time.time() - 1.0, self._stop)
        threading.Thread(target=self._watch, args=args, name="grpo-rank-slurm-watch", daemon=True).start()

    def on_multirun_end(self, config, **kwargs) -> None:
        if self._stop is not None:
            self._stop.set()

    def _watch(self, sweep_dir: Path, config_name: str, since: float, stop: threading.Event) -> None:
        seen: set[str] = set()  # dropped on the last look: a second look in a row is needed to act
        while not stop.wait(self.interval_s):
            try:
                now = dropped(sweep_dir, since)
                for sub in now:
                    if sub.slurm_id in seen:
                        end_dropped(sub, sweep_dir, config_name)
                seen = {sub.slurm_id for sub in now}
            except Exception:  # noqa: BLE001 - the watch must never stop the sweep; the next look tries again
                log.warning("grpo-rank: watching the Slurm queue failed; trying again", exc_info=True)
