"""Where a sweep stands: one line per job (finished with its accuracy, running with its step and ETA,
queued or failed on Slurm, failed and why, not started) and a total line. Exit status 1 when a job failed.

    python -m grpo_rank.status multirun/<date>/<time>           # a sweep in progress or done
    python -m grpo_rank.status multirun/<date>/<time> --json    # the same, as one JSON document
    make status                                                 # the newest sweep (or SWEEP=...)

It only reads: job folders (runs.jsonl, result.json, train_log.jsonl, .hydra/), the sweep's multirun.yaml
(its jobs, also those without a folder yet), submitit's submissions under `<sweep>/.submitit/` and `sacct`.
Folders are found by what they hold and matched to jobs by `.hydra/overrides.yaml` (or, for a Slurm task
dropped before it started, the overrides its runs.jsonl records), never by name, so both folder layouts
and grown sweeps read alike. Without Slurm a job's state comes from its folder alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.record.files import RESULT, RUNS, TRAIN_LOG, read_jsonl
from grpo_rank.record.result import RecordError, read_result
from grpo_rank.sweep.layout import folder_overrides, job_folders
from grpo_rank.sweep.naming import expand_sweep, job_dir_name
from grpo_rank.sweep.runlog import last_launch

STATES = ("finished", "running", "queued", "failed", "not started", "dry run")

# sacct states of a job that will still run, and of one that runs; any other state has ended
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "SUSPENDED",
                 "CONFIGURING", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT"}
SLURM_RUNNING = {"RUNNING", "COMPLETING"}
# Slurm keeps no accounting row for an array task cancelled while pending (22.05): its array has rows,
# it has none. submitit's launcher then waits for it forever; this view says it is gone.
REMOVED = "REMOVED"


@dataclass
class JobStatus:
    name: str  # the job folder's name, or the name its folder will get
    state: str  # one of STATES
    detail: str  # accuracy, progress, the reason it failed, ...
    path: str | None = None  # the job folder, when there is one
    overrides: list[str] = field(default_factory=list)
    phase: str | None = None  # running: profile | train | eval
    step: int | None = None  # running: steps done in `phase`
    steps: int | None = None  # running: steps of `phase`
    eta_s: float | None = None  # running: seconds until the last training step, from its step times
    accuracy: float | None = None  # finished, with its 95% Wilson interval below
    ci_low: float | None = None
    ci_high: float | None = None
    slurm_id: str | None = None  # <array job>_<task> (or the job id) of the job's latest submission
    slurm_state: str | None = None  # as sacct says


@dataclass
class Submission:
    """One job submitted by hydra-submitit-launcher: `<sweep>/.submitit/<id>/<id>_submitted.pkl`."""

    slurm_id: str
    pickle: Path
    submitted: float  # the pickle's mtime: written just before sbatch, so before the job can start


def expected_jobs(sweep_dir: Path) -> tuple[list[list[str]], set[str] | None]:
    """Every job's overrides as Hydra's basic sweeper expands `<sweep>/multirun.yaml` (hydra.sweeper.params
    first, then the command line's), and the swept keys; ([], None) when there is none to read."""
    try:
        return expand_sweep(sweep_dir)
    except Exception as exc:  # noqa: BLE001 - a sweep without (or with an unreadable) multirun.yaml still has folders
        if (sweep_dir / "multirun.yaml").exists():
            print(f"grpo-rank status: cannot expand {sweep_dir / 'multirun.yaml'} ({type(exc).__name__}: {exc}); "
                  "listing job folders only", file=sys.stderr)
        return [], None


def submissions(sweep_dir: Path) -> list[Submission]:
    """hydra-submitit-launcher's submissions: `.submitit/<A>_<a>/<A>_<a>_submitted.pkl` per array task
    (`.submitit/<J>/<J>_submitted.pkl` when a sweep of one job was no array)."""
    out = []
    for pkl in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"):
        slurm_id = pkl.name.removesuffix("_submitted.pkl")
        if pkl.parent.name == slurm_id:
            out.append(Submission(slurm_id, pkl, pkl.stat().st_mtime))
    return sorted(out, key=lambda s: s.submitted)


def submission_overrides(sub: Submission) -> list[str] | None:
    """The job overrides the launcher pickled with the task: its first argument (submitit_launcher.py's
    `job_params`). Unpickling imports the launcher and grpo_rank.run, so it is done only for submissions
    no job folder has claimed yet."""
    from submitit.core.utils import DelayedSubmission

    try:
        return [str(o) for o in DelayedSubmission.load(sub.pickle).args[0]]
    except Exception as exc:  # noqa: BLE001 - one unreadable submission must not hide the others
        print(f"grpo-rank status: cannot read {sub.pickle} ({type(exc).__name__})", file=sys.stderr)
        return None


def launch_slurm_id(event: dict) -> str | None:
    """The id a `started` event ran under, in submitit's spelling (`<array job>_<task>` for an array task)."""
    if "slurm_array_job_id" in event and "slurm_array_task_id" in event:
        return f"{event['slurm_array_job_id']}_{event['slurm_array_task_id']}"
    return event.get("slurm_job_id")


def slurm_states(ids: set[str]) -> dict[str, str]:
    """sacct's state of each job or array task among `ids` (and of every other task of their arrays); {} when
    sacct is not there. A pending array shows as `12_[1-3,5%2]`: expanded to 12_1, 12_2, ..."""
    parents = sorted({i.split("_", 1)[0] for i in ids})
    if not parents:
        return {}
    try:
        out = subprocess.run(["sacct", "-j", ",".join(parents), "--format=JobID,State", "--parsable2",
                              "--noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_sacct(out.stdout) if out.returncode == 0 else {}


def parse_sacct(text: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        if not job_id or "." in job_id:  # job steps (12_0.batch, 12_0.extern) are not jobs
            continue
        state = state.split()[0] if state.split() else "UNKNOWN"  # "CANCELLED by 0"
        m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
        if not m:
            states[job_id] = state  # a requeued job is listed again: the last row is the current one
            continue
        for part in m.group(2).split("%")[0].split(","):
            lo, _, hi = part.partition("-")
            for task in range(int(lo), int(hi or lo) + 1):
                states[f"{m.group(1)}_{task}"] = state
    return states



def removed(ids: set[str], slurm: dict[str, str]) -> set[str]:
    """The array tasks among `ids` that sacct does not list although it lists their array: they left the
    queue without running (Slurm 22.05 keeps no row for a task cancelled while pending)."""
    known = {i.split("_", 1)[0] for i in slurm}
    return {i for i in ids - set(slurm) if "_" in i and i.split("_", 1)[0] in known}


def progress(folder: Path, started_at: float | None, now: float) -> tuple[str, int, int, float | None]:
    """(phase, steps done, steps of the phase, ETA in seconds) of a running job, from its resolved config
    (.hydra/config.yaml: strategy, grpo.steps, profile.steps) and the steps its train_log.jsonl holds. The
    ETA is the steps left (profile then train) times the median TRL `step_time` of the rows logged."""
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    strategy = STRATEGIES.get(str(cfg.strategy.name))
    trains = strategy.trains if strategy else True
    profiles = bool(strategy and strategy.needs_profile and cfg.profile.get("from_run") is None)
    n_profile, n_train = int(cfg.profile.steps) if profiles else 0, int(cfg.grpo.steps) if trains else 0
    rows = read_jsonl(folder / TRAIN_LOG)
    done = {ph: max((int(r["step"]) for r in rows if r.get("phase") == ph), default=0) for ph in ("profile", "train")}
    if done["profile"] < n_profile and done["train"] == 0:
        phase, step, steps, left = "profile", done["profile"], n_profile, n_profile - done["profile"] + n_train
    elif done["train"] < n_train:
        phase, step, steps, left = "train", done["train"], n_train, n_train - done["train"]
    else:
        return "eval", done["train"], n_train, None
    times = [float(r["step_time"]) for r in rows if r.get("phase") == phase and "step_time" in r] or \
            [float(r["step_time"]) for r in rows if "step_time" in r]  # profile steps train the same model
    if times:
        return phase, step, steps, left * statistics.median(times)
    if started_at is not None and step > 0:  # no step times logged: the launch's pace so far
        return phase, step, steps, left * (now - started_at) / step
    return phase, step, steps, None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown"
    s = int(round(seconds))
    return f"ETA {s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"ETA {s // 60}m{s % 60:02d}s" if s >= 60 else f"ETA {s}s"


def _pid_gone(event: dict) -> bool:
    """True when the launch ran on this host and its process no longer exists: it was killed too hard to
    record an outcome (SIGKILL, out of memory, power). Other hosts' processes cannot be seen from here."""
    if event.get("host") != socket.gethostname() or "pid" not in event:
        return False
    try:
        os.kill(int(event["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def finished_status(st: JobStatus, folder: Path) -> JobStatus:
    try:
        result = read_result(folder)
    except RecordError as exc:
        st.state, st.detail = "failed", str(exc)
        return st
    if result.status == "dry_run":
        st.state, st.detail = "dry run", "allocation only, nothing trained"
    elif not result.finished:
        st.state, st.detail = "failed", result.error or f"result.json says {result.status}"
    elif result.eval is None:
        st.state, st.detail = "finished", "no evaluation recorded"
    else:
        ev = result.eval
        st.state, st.accuracy, st.ci_low, st.ci_high = "finished", ev.accuracy, ev.ci_low, ev.ci_high
        st.detail = f"accuracy {ev.accuracy:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] n={ev.n}"
    return st


def running_status(st: JobStatus, folder: Path, start: dict | None, now: float) -> JobStatus:
    st.state = "running"
    try:
        st.phase, st.step, st.steps, st.eta_s = progress(folder, start and start.get("time"), now)
    except Exception as exc:  # noqa: BLE001 - no resolved config yet, or Hydra is writing it
        st.detail = f"starting ({type(exc).__name__} reading its config)"
        return st
    if st.phase == "eval":
        st.detail = f"evaluating (trained {st.step} of {st.steps} steps)"
    else:
        st.detail = f"{st.phase} step {st.step} of {st.steps}, {_eta(st.eta_s)}"
    where = [f"on {start['host']}"] if start and start.get("host") else []
    where += [f"slurm {st.slurm_id}"] if st.slurm_id else []
    st.detail += f" ({', '.join(where)})" if where else ""
    return st


def slurm_only_status(st: JobStatus, sub: Submission, state: str | None, what: str) -> JobStatus:
    """A job whose latest submission has not (yet) started it: the state is Slurm's."""
    st.slurm_id, st.slurm_state = sub.slurm_id, state
    log = sub.pickle.parent / f"{sub.slurm_id}_0_log.err"
    if state is None or state in SLURM_WAITING:
        st.state, st.detail = "queued", f"slurm {sub.slurm_id} {state or 'submitted, not in sacct yet'}{what}"
    elif state in SLURM_RUNNING:
        st.state, st.detail = "running", f"starting (slurm {sub.slurm_id} RUNNING)"
    elif state == REMOVED:
        st.state = "failed"
        st.detail = (f"slurm {sub.slurm_id} left the queue without running (cancelled while pending); "
                     "launch the sweep again to run it")
    else:
        st.state = "failed"
        st.detail = f"slurm {sub.slurm_id} {state} before the job recorded a start; see {log}"
    return st


def job_status(name: str, folder: Path | None, overrides: list[str], sub: Submission | None,
               slurm: dict[str, str], now: float) -> JobStatus:
    """The state of one job from its folder's last launch, its latest Slurm submission and sacct."""
    st = JobStatus(name=name, state="not started", detail="no folder yet", overrides=overrides,
                   path=str(folder) if folder else None)
    events = last_launch(folder) if folder else []
    start = events[0] if events and events[0]["event"] == "started" else None
    end = next((e for e in reversed(events) if e["event"] != "started"), None)
    if end and end["event"] in ("finished", "skipped", "dry_run"):
        return finished_status(st, folder)
    # a submission newer than the last launch is a relaunch (or requeue) not yet started: Slurm knows
    if sub and (not events or sub.submitted > events[0]["time"]):
        again = "; earlier launch " + (end or {}).get("event", "did not finish") if events else ""
        return slurm_only_status(st, sub, slurm.get(sub.slurm_id), again)
    if folder is None:
        return st  # in the sweep, never launched
    if not events and (folder / RESULT).exists():  # a record without a history (older layout)
        return finished_status(st, folder)
    if start:
        st.slurm_id = launch_slurm_id(start)
        st.slurm_state = slurm.get(st.slurm_id) if st.slurm_id else None
    state = st.slurm_state
    if end and end["event"] == "failed":
        st.state, st.detail = "failed", end.get("detail") or _result_error(folder) or "failed (no reason recorded)"
    elif end and end["event"] == "interrupted":  # Slurm preemption or time-out: submitit requeues it
        if state in SLURM_WAITING or state in SLURM_RUNNING:
            st.state = "queued"
            st.detail = f"requeued after {end.get('detail', 'an interruption')} (slurm {st.slurm_id} {state})"
        else:
            st.state = "failed"
            st.detail = f"interrupted ({end.get('detail', '?')}); launch the sweep again to resume it"
    elif start is None:  # Hydra made the folder; the job has not recorded its start yet
        st.state, st.detail = "running", "starting"
    elif state is not None and state not in SLURM_RUNNING and state not in SLURM_WAITING:
        st.state, st.detail = "failed", f"no outcome recorded; slurm {st.slurm_id} ended {state}"
    elif st.slurm_id is None and _pid_gone(start):
        st.state = "failed"
        st.detail = f"no outcome recorded; its process {start['pid']} on {start['host']} is gone (killed)"
    else:
        return running_status(st, folder, start, now)
    return st


def _last_time(events: list[dict]) -> float:
    return max((float(e.get("time", 0.0)) for e in events), default=0.0)


def _result_error(folder: Path) -> str | None:
    try:
        return read_result(folder).error
    except RecordError:
        return None



def sweep_status(sweep_dir: Path, now: float | None = None) -> list[JobStatus]:
    """One JobStatus per job: the sweep's jobs in multirun.yaml's order, then folders and submissions that
    match none of them (an earlier launch of other overrides)."""
    sweep_dir, now = Path(sweep_dir), time.time() if now is None else now
    expected, swept = expected_jobs(sweep_dir)
    jobs: dict[frozenset, dict] = {}  # by the job's set of overrides
    for overrides in expected:
        jobs.setdefault(frozenset(overrides), {"overrides": overrides, "folder": None, "sub": None})
    by_slurm_id: dict[str, frozenset] = {}
    for folder in job_folders(sweep_dir):
        events = read_jsonl(folder / RUNS)
        # a job Slurm dropped before it started has no .hydra/: the launcher recorded its overrides (slurm.py)
        overrides = folder_overrides(folder) or next((e["overrides"] for e in reversed(events) if "overrides" in e), [])
        key = frozenset(overrides) if overrides else frozenset({f"<folder {folder.name}>"})
        job = jobs.setdefault(key, {"overrides": overrides, "folder": None, "sub": None})
        # two folders of one job (an old-layout folder and its renamed relaunch): the one launched last
        if job["folder"] is None or _last_time(events) >= _last_time(read_jsonl(job["folder"] / RUNS)):
            job["folder"] = folder
        for e in events:
            if e.get("event") in ("started", "submitted") and launch_slurm_id(e):
                by_slurm_id[launch_slurm_id(e)] = key
    for sub in submissions(sweep_dir):  # oldest first: a job's latest submission wins
        key = by_slurm_id.get(sub.slurm_id)
        if key is None:
            overrides = submission_overrides(sub)
            if overrides is None:
                continue
            key = frozenset(overrides)
            jobs.setdefault(key, {"overrides": overrides, "folder": None, "sub": None})
        jobs[key]["sub"] = sub
    ids = {j["sub"].slurm_id for j in jobs.values() if j["sub"]} | set(by_slurm_id)
    slurm = slurm_states(ids)
    slurm.update(dict.fromkeys(removed(ids, slurm), REMOVED))
    return [job_status(j["folder"].name if j["folder"] else job_dir_name(j["overrides"], swept), j["folder"],
                       j["overrides"], j["sub"], slurm, now) for j in jobs.values()]


def totals(statuses: list[JobStatus]) -> dict[str, int]:
    return {s: sum(st.state == s for st in statuses) for s in STATES}


def render(statuses: list[JobStatus]) -> list[str]:
    width = max((len(st.name) for st in statuses), default=0)
    lines = [f"{st.name:<{width}}  {st.state:<11}  {st.detail}" for st in statuses]
    counts = totals(statuses)
    lines.append(f"total {len(statuses)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()
                                                             if n or s in STATES[:4]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_rank.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"grpo-rank status: {args.sweep_dir} is not a folder; pass a sweep's folder (multirun/<date>/<time>)",
              file=sys.stderr)
        return 2
    statuses = sweep_status(args.sweep_dir)
    doc = {"sweep": str(args.sweep_dir), "jobs": [asdict(st) for st in statuses], "totals": totals(statuses)}
    print(json.dumps(doc, indent=2) if args.json else "\n".join(render(statuses)))
    return 1 if any(st.state == "failed" for st in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
