"""The summary printed when a multirun ends: one line per job (finished / skipped / failed and why),
read back from the job folders' run logs. `SweepSummary` is registered in conf/config.yaml under
hydra.callbacks.
"""

from __future__ import annotations

import atexit
import re
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from grpo_rank.record.files import RUNS
from grpo_rank.sweep.runlog import TERMINAL, last_launch
from grpo_rank.sweep.status import render, sweep_status


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
        try:
            lines = render(sweep_status(self.sweep_dir))
        except Exception as exc:  # noqa: BLE001 - the process is ending on another error already
            lines = [f"(no status: {type(exc).__name__}: {exc})"]
        print(f"grpo-rank: the launcher stopped before the sweep ended; sweep {self.sweep_dir}:", flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        print("grpo-rank: relaunch the same command to run what is missing (finished jobs are skipped)", flush=True)
