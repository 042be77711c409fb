"""The run log of a job folder: whether a job may be skipped (and a forced rerun's cleanup), and the
history of each job's launches, whatever launcher ran it (basic, joblib, submitit_local, slurm).

Every launch of a job appends to its runs.jsonl: `started` (host, pid, Slurm ids, job_key), then `finished`,
`skipped`, `failed` or `interrupted` (a kill that Python saw, e.g. Slurm preemption). A Slurm task that
left the queue before it started gets `submitted` (its Slurm ids and overrides) and `failed` from the
launcher's process instead (sweep/slurm.py). The sweep's
summary (callback.py) and status (status.py) read these back from the job folders, so they also see
jobs that ran on other machines.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

from grpo_rank.record.files import RESULT, RUNS, append_jsonl, read_jsonl
from grpo_rank.record.result import JobResult, RecordError, read_result

TERMINAL = ("finished", "skipped", "failed", "interrupted", "dry_run")


def finished_result(job_dir: Path, config_hash: str) -> JobResult | None:
    """The job folder's record when it is a finished run of this same config (and code): such a job is
    skipped. A damaged record (unreadable, another shape or version) is set aside, so the job reruns."""
    path = Path(job_dir) / RESULT
    if not path.exists():
        return None
    try:
        result = read_result(job_dir)
    except RecordError as exc:
        aside = path.with_name(f"{RESULT}.damaged-{time.time_ns()}")
        os.replace(path, aside)
        print(f"grpo-rank: {exc}; moved to {aside.name}, the job runs again", file=sys.stderr)
        return None
    return result if result.finished and result.job.config_hash == config_hash else None


def should_skip(job_dir: Path, config_hash: str, force: bool, job_key: str | None = None) -> bool:
    """Skip a finished job of the same config; `force` reruns it from scratch instead of resuming. The
    `skipped` event records `job_key` (naming.py finds the folder by it)."""
    if force:
        for folder in Path(job_dir).glob("trainer_*"):  # a forced rerun starts afresh, no earlier attempt
            shutil.rmtree(folder, ignore_errors=True)
        return False
    if finished_result(job_dir, config_hash) is None:
        return False
    record(job_dir, "skipped", detail="result.json holds a finished run of this config (force=true reruns it)",
           **({"job_key": job_key} if job_key else {}))
    return True


def finished_detail(result: JobResult) -> str:
    """What the summary says about a finished job: accuracy, time, and whether it resumed."""
    ev = result.eval
    parts = [f"accuracy {ev.accuracy:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] n={ev.n}"] if ev else []
    parts.append(f"{result.timings.get('total_s', 0.0):.1f} s")
    if result.train and result.train.resumed_from_step:
        parts.append(f"resumed from step {result.train.resumed_from_step}")
    if result.profile:
        src = result.profile.source
        parts.append("its training published as the profile" if src == "published" else f"profile from {src}")
    return "; ".join(parts)


def record(job_dir: Path, event: str, **fields) -> None:
    row = {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    for env, key in (("SLURM_JOB_ID", "slurm_job_id"), ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
                     ("SLURM_ARRAY_TASK_ID", "slurm_array_task_id"), ("SLURM_RESTART_COUNT", "slurm_restarts")):
        if env in os.environ:
            row[key] = os.environ[env]
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    append_jsonl(Path(job_dir) / RUNS, {**row, **fields})


def last_launch(job_dir: Path) -> list[dict]:
    """The events of the job's most recent launch, from its last `started`, `skipped` or `submitted` (a
    Slurm task that left the queue before it started, recorded by the launcher: sweep/slurm.py) on."""
    events = read_jsonl(Path(job_dir) / RUNS)
    starts = [i for i, e in enumerate(events) if e["event"] in ("started", "skipped", "submitted")]
    return events[starts[-1]:] if starts else []
