"""Sweep bookkeeping: whether a job may be skipped (and a forced rerun's cleanup), the history of each job's launches, and the summary
printed when a multirun ends, whatever launcher ran it (basic, joblib, submitit_local, slurm).

Every launch of a job appends to its runs.jsonl: `started` (host, pid, Slurm ids), then `finished`,
`skipped`, `failed` or `interrupted` (a kill that Python saw, e.g. Slurm preemption). The summary reads
these back from the job folders, so it also sees jobs that ran on other machines. `SweepSummary` is
registered in conf/config.yaml under hydra.callbacks.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from .records import RESULT, RUNS, append_jsonl, read_jsonl
from .result import JobResult, RecordError, read_result

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


def should_skip(job_dir: Path, config_hash: str, force: bool) -> bool:
    """Skip a finished job of the same config; `force` reruns it from scratch instead of resuming."""
    if force:
        for folder in Path(job_dir).glob("trainer_*"):  # a forced rerun starts afresh, no earlier attempt
            shutil.rmtree(folder, ignore_errors=True)
        return False
    if finished_result(job_dir, config_hash) is None:
        return False
    record(job_dir, "skipped", detail="result.json holds a finished run of this config (force=true reruns it)")
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
    """The events of the job's most recent launch, from its last `started` or `skipped` on."""
    events = read_jsonl(Path(job_dir) / RUNS)
    starts = [i for i, e in enumerate(events) if e["event"] in ("started", "skipped")]
    return events[starts[-1]:] if starts else []


def _job_order(folder: Path) -> tuple:
    m = re.match(r"^(\d+)_", folder.name)
    return (int(m.group(1)) if m else sys.maxsize, folder.name)


def summarize(sweep_dir: Path, since: float = 0.0) -> tuple[list[str], int]:
    """One line per job launched at or after `since`: finished / skipped / failed and why; and how many
    did not finish."""
    lines, bad = [], 0
    folders = sorted((p for p in Path(sweep_dir).iterdir() if (p / RUNS).exists()), key=_job_order)
    for folder in folders:
        events = last_launch(folder)
        if not events or events[0]["time"] < since:
            continue  # launched by an earlier command into the same sweep folder
        end = next((e for e in reversed(events) if e["event"] in TERMINAL), None)
        if end is None:
            bad += 1
            lines.append(f"{folder.name}: failed: no outcome recorded (killed before it could write one)")
            continue
        bad += end["event"] in ("failed", "interrupted")
        lines.append(f"{folder.name}: {end['event']}: {end.get('detail', '')}".rstrip(": "))
    return lines, bad


class SweepSummary(Callback):
    """Prints one line per job when a multirun ends and exits non-zero when any job failed. Jobs report
    failure by recording it rather than raising (run.py), so one failed job neither stops the sweep
    nor hides the other jobs' outcomes. When the launcher itself aborts (a submission refused, an
    interrupt, a crash), Hydra never calls on_multirun_end; the sweep's status is printed at exit instead."""

    def __init__(self) -> None:
        self.start = 0.0
        self.sweep_dir: Path | None = None
        self.ended = False

    def on_multirun_start(self, config, **kwargs) -> None:
        self.start = time.time() - 1.0  # a job's clock may lag this one's by a little on another node
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self.after_abort)

    def on_multirun_end(self, config, **kwargs) -> None:
        self.ended = True
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        lines, bad = summarize(sweep_dir, self.start)
        print(f"grpo-rank: sweep {sweep_dir}: {len(lines)} jobs")
        for line in lines:
            print(f"  {line}")
        if bad:
            print(f"grpo-rank: {bad} of {len(lines)} jobs did not finish (see each job's error.txt)", file=sys.stderr)
            sys.exit(1)  # SystemExit passes Hydra's error handler untouched: the sweep's status is the jobs'

    def after_abort(self) -> None:
        if self.ended or self.sweep_dir is None or not self.sweep_dir.is_dir():
            return
        from .status import render, sweep_status  # the status view, with the jobs that never started

        try:
            lines = render(sweep_status(self.sweep_dir))
        except Exception as exc:  # noqa: BLE001 - the process is ending on another error already
            lines = [f"(no status: {type(exc).__name__}: {exc})"]
        print(f"grpo-rank: the launcher stopped before the sweep ended; sweep {self.sweep_dir}:", flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        print("grpo-rank: relaunch the same command to run what is missing (finished jobs are skipped)", flush=True)
