"""Finding a sweep's jobs, finished or not, and reducing each finished job's records to small arrays.

A job is known by its record (`result.json`, read by result.read_result): its identity (strategy,
budget, seed, model, task) comes from the record's `job` part, and its alpha mode, alpha, uniform rank,
importance signal and algorithm from the record's config (a record from before the algorithm axis
ran dapo, jobs.DEFAULT_ALGORITHM), whatever its folder is called, so sweeps
whose folders are numbered (`<n>_<strategy>_<budget>_s<seed>`) and sweeps whose folders are named from
the overrides (`seed-0_strategy-uniform`) read alike. Folder names and `.hydra/overrides.yaml` only
label jobs that have no record (killed, or expected by Hydra's multirun.yaml and never started).

`load` is streaming: after discovery (records only), one job at a time its gradients are read
(importance.read_cube: the needed columns of one phase) and reduced to a `GradSummary` of a few
per-layer vectors, and its outcomes to one boolean per question; nothing per step or per record stays,
so memory does not grow with the number of jobs beyond those small arrays. The full-weight rows
(matrix "W") are read in a second pass only when the file's statistics say it has some; a job whose
ranks move (jobs.DYNAMIC: adalora) has its `rank` column read once more, into a RankTrajectory; a job
with reward_grads.parquet (`profile.per_reward=true`) has it reduced to a RewardSummary (rewards.py).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from grpo_rank.allocation.importance import read_cube
from grpo_rank.analysis.report.jobs import (
    DEFAULT_ALGORITHM,
    DYNAMIC,
    Job,
    active,
    alpha_mode_of,
    read_outcomes,
    summarise,
)
from grpo_rank.analysis.report.rewards import read_reward_summary
from grpo_rank.analysis.report.trajectories import read_rank_trajectory
from grpo_rank.record.files import GRADS, OUTCOMES, RESULT, REWARD_GRADS
from grpo_rank.record.result import JobResult, RecordError, read_result
from grpo_rank.sweep.layout import MULTIRUN, NOT_JOBS, expand, is_job_folder, parse_overrides, read_yaml

# the numbered job folders conf/config.yaml wrote before folders were named by the swept keys:
# ${hydra.job.num}_${strategy.name}_${budget.name}_s${seed}
JOB_DIR = re.compile(r"^(?P<num>\d+)_(?P<strategy>[^_]+)_(?P<budget>[^_]+)_s(?P<seed>-?\d+)$")
PHASE = "train"  # gradient statistics use the training phase: the run at its own ranks


def folder_labels(name: str) -> dict[str, str]:
    """What a folder name says about its job: `<n>_<strategy>_<budget>_s<seed>`, or Hydra's
    override_dirname `k=v,k=v`; {} for other names."""
    m = JOB_DIR.match(name)
    if m:
        return m.groupdict()
    if "=" in name:
        return parse_overrides(name.split(","))
    return {}


def sweep_defaults(sweep: Path) -> dict:
    """The composed config in multirun.yaml: values of the axes a job did not override."""
    path = sweep / MULTIRUN
    if not path.exists():
        return {}
    cfg = read_yaml(path) or {}

    def name(key: str) -> str | None:
        node = cfg.get(key)
        return node.get("name") if isinstance(node, dict) else None

    lora, profile = cfg.get("lora") or {}, cfg.get("profile") or {}
    # a composed config without the algorithm group is a sweep from before it existed: dapo
    return {"strategy": name("strategy"), "budget": name("budget"), "model": name("model"), "task": name("task"),
            "seed": cfg.get("seed"), "alpha_mode": alpha_mode_of(lora) if lora else None,
            "signal": profile.get("signal"), "algorithm": name("algorithm") or (DEFAULT_ALGORITHM if cfg else None),
            "r": lora.get("r"), "steps": (cfg.get("grpo") or {}).get("steps")}


def expected_jobs(sweep: Path) -> tuple[list[dict] | None, str]:
    """The jobs Hydra's basic sweeper launched for this sweep, in job-number order, from multirun.yaml:
    [{'num': 0, 'overrides': {...}}, ...], or None and why it could not be derived."""
    if not (sweep / MULTIRUN).exists():
        return None, "no multirun.yaml"
    try:
        jobs = expand(sweep).jobs
    except Exception as exc:  # a report on a partial sweep must not die on a config it cannot parse
        return None, f"could not read multirun.yaml ({type(exc).__name__}: {exc})"
    return [{"num": i, "overrides": parse_overrides(ovs)} for i, ovs in enumerate(jobs)], ""


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _label(job: Job, overrides: dict, folder: dict, defaults: dict) -> None:
    """Fill the axes of a job without a record from its overrides, its folder name, the sweep's defaults.
    An algorithm nothing names is "?" until find_jobs borrows it from the sweep's records."""
    for key in ("strategy", "budget", "model", "task"):
        value = overrides.get(key) or folder.get(key) or defaults.get(key)
        if value:
            setattr(job, key, str(value))
    given = {**folder, **overrides}
    lora = {k.removeprefix("lora."): v for k, v in given.items() if k.startswith("lora.")}
    job.alpha_mode = alpha_mode_of(lora) if lora.keys() & {"alpha_mode", "use_rslora"} else (
        defaults.get("alpha_mode") or job.alpha_mode)
    job.signal = str(given.get("profile.signal") or defaults.get("signal") or job.signal)
    job.algorithm = str(given.get("algorithm") or given.get("algorithm.name") or defaults.get("algorithm") or "?")
    job.r_uniform = _int(lora.get("r", defaults.get("r")))
    job.steps = _int(given.get("grpo.steps", defaults.get("steps")))
    job.seed = _int(overrides.get("seed", folder.get("seed", defaults.get("seed"))))


def job_from_record(sweep: Path, name: str, result: JobResult) -> Job:
    detail = result.error or ""
    if result.status == "dry_run":
        detail = "dry run: no training or evaluation"
    elif result.status == "running":
        detail = "result.json says running: the job was killed before it finished"
    ident = result.job
    # the config is the record's plain dict (JobResult.config); hand-written records may lack the groups
    lora, profile = result.config.get("lora") or {}, result.config.get("profile") or {}
    steps = (result.config.get("grpo") or {}).get("steps")
    algorithm = result.config.get("algorithm")
    return Job(sweep=sweep, name=name, status=result.status, detail=detail, result=result,
               strategy=ident.strategy, budget=ident.budget, seed=ident.seed, model=ident.model, task=ident.task,
               budget_fraction=ident.budget_fraction, alpha_mode=alpha_mode_of(lora),
               signal=str(profile.get("signal") or "lora"),
               alpha=float(lora["alpha"]) if lora.get("alpha") is not None else None,
               r_uniform=int(lora["r"]) if lora.get("r") is not None else None,
               steps=int(steps) if steps is not None else None,
               algorithm=str(algorithm.get("name") or DEFAULT_ALGORITHM) if isinstance(algorithm, dict)
               else DEFAULT_ALGORITHM)


def _job_number(folder: str) -> int | None:
    m = JOB_DIR.match(folder)
    return int(m["num"]) if m else None


def _is_job_folder(p: Path) -> bool:
    # a numbered folder from before the overrides-named ones may hold nothing yet but its name
    return is_job_folder(p) or (p.is_dir() and p.name not in NOT_JOBS and bool(folder_labels(p.name)))


def find_jobs(sweep: Path) -> tuple[list[Job], list[str]]:
    """Every job of one sweep folder, finished or not, in Hydra's launch order, without reading
    gradients yet; and notes."""
    notes: list[str] = []
    if (sweep / RESULT).exists():  # a single job folder given directly
        try:
            return [job_from_record(sweep.parent, sweep.name, read_result(sweep))], notes
        except RecordError as exc:
            return [], [f"unreadable: {exc}"]
    defaults = sweep_defaults(sweep)
    expected, why = expected_jobs(sweep)
    if expected is None and why != "no multirun.yaml":
        notes.append(f"{sweep}: {why}; only job folders are listed")
    launched = {}  # folder -> (its job number, its overrides), the two ways to match multirun.yaml
    for folder in (p for p in sweep.iterdir() if _is_job_folder(p)):
        ov_path = folder / ".hydra" / "overrides.yaml"
        overrides = parse_overrides(read_yaml(ov_path)) if ov_path.exists() else folder_labels(folder.name)
        launched[folder] = (_job_number(folder.name), overrides)

    def position(folder: Path) -> int | None:
        num, overrides = launched[folder]
        return next((e["num"] for e in expected or () if e["num"] == num
                     or (overrides and e["overrides"] == overrides)), None)

    found = {f: position(f) for f in launched}
    jobs: list[Job] = []
    for folder in sorted(launched, key=lambda f: (found[f] is None, found[f] or 0, _job_number(f.name) is None,
                                                  _job_number(f.name) or 0, f.name)):
        if (folder / RESULT).exists():
            try:
                jobs.append(job_from_record(sweep, folder.name, read_result(folder)))
            except RecordError as exc:  # a torn, hand-edited or other-version record: say so, go on
                notes.append(f"unreadable: {exc}")
            continue
        job = Job(sweep=sweep, name=folder.name, status="missing",
                  detail="no result.json (still running, or killed before it finished)")
        _label(job, launched[folder][1], folder_labels(folder.name), defaults)
        jobs.append(job)
    if expected is not None and launched and not any(num is not None or ov for num, ov in launched.values()):
        notes.append(f"{sweep}: job folders name neither a job number nor overrides; jobs that never started "
                     "cannot be matched to multirun.yaml")
    elif expected is not None:
        for exp in expected:
            if exp["num"] not in found.values():
                job = Job(sweep=sweep, name=f"{exp['num']}_(no folder)", status="missing",
                          detail="expected by multirun.yaml, no job folder (never started)")
                _label(job, exp["overrides"], {}, defaults)
                jobs.append(job)
    # a job that never wrote result.json may lack model and task when there is no multirun.yaml:
    # borrow them from its finished siblings when the sweep has one model and one task
    known = {(j.model, j.task) for j in jobs if j.result is not None}
    if len(known) == 1:
        model, task = known.pop()
        for j in jobs:
            if j.result is None:
                j.model = model if j.model == "?" else j.model
                j.task = task if j.task == "?" else j.task
    # likewise the algorithm (else the config's default), lora.r and grpo.steps, so that it joins its
    # siblings' arm
    algorithms = {j.algorithm for j in jobs if j.result is not None}
    algorithm = next(iter(algorithms)) if len(algorithms) == 1 else DEFAULT_ALGORITHM
    ranks = {j.r_uniform for j in jobs if j.result is not None}
    lengths = {j.steps for j in jobs if j.result is not None}
    for j in jobs:
        if j.result is None and j.algorithm == "?":
            j.algorithm = algorithm
        if j.result is None and j.r_uniform is None and len(ranks) == 1:
            j.r_uniform = next(iter(ranks))
        if j.result is None and j.steps is None and len(lengths) == 1:
            j.steps = next(iter(lengths))
    return jobs, notes


def empty_steps_note(where: str, norms) -> str:
    """What the report skipped for a job whose gradient was zero at some steps, and why."""
    steps, n = norms.empty_steps, len(norms.empty_steps)
    listed = ", ".join(map(str, steps[:10])) + (f", ... ({n} in all)" if n > 10 else "")
    why = (f"{where}: no gradient at {PHASE} step{'s' if n > 1 else ''} {listed} (every norm zero: under GRPO, "
           "no group of completions had reward spread, so every advantage was zero)")
    if norms.first is None:
        return why + "; its \"at init\" scaling slopes are skipped and its S(l) is zero, so its shares are n/a"
    return why + f"; its \"at init\" statistics use step {norms.first_step}, the first with a gradient"


def dedupe(jobs: list[Job], notes: list[str]) -> None:
    """One job per arm and seed: finished beats unfinished, later beats earlier."""
    by_key: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.seed is not None and "?" not in job.arm:
            by_key[(*job.arm, job.seed)].append(job)
    for same in by_key.values():
        if len(same) < 2:
            continue
        winner = max(same, key=lambda j: (j.status == "ok", jobs.index(j)))
        for job in same:
            if job is not winner:
                job.superseded_by = winner.where
        notes.append(f"{winner.where} is used; also found: {', '.join(j.where for j in same if j is not winner)}")


def load(sweeps: list[Path], early: float = 0.25, late: float = 0.25,
         progress: bool = True) -> tuple[list[Job], list[str]]:
    """All jobs of all sweeps; the finished ones with their gradients and outcomes reduced, one at a time."""
    from tqdm.auto import tqdm

    jobs: list[Job] = []
    notes: list[str] = []
    for sweep in sweeps:
        found, more = find_jobs(sweep)
        jobs += found
        notes += more
    dedupe(jobs, notes)
    for job in tqdm(active(jobs), desc="loading jobs", unit="job", disable=not progress, file=sys.stderr):
        folder = job.sweep / job.name
        try:
            cube = read_cube(folder / GRADS, PHASE) if (folder / GRADS).exists() else None
            # None, from the file's statistics alone, when it has no full-weight rows
            w_cube = read_cube(folder / GRADS, PHASE, "full_weight") if cube is not None else None
        except Exception as exc:  # a corrupt parquet costs this job its gradient statistics, nothing more
            notes.append(f"{job.where}: unreadable {GRADS} ({type(exc).__name__}: {exc})")
            cube = w_cube = None
        job.grads = summarise(cube, early, late, w_cube) if cube is not None else None
        del cube, w_cube  # only the summary outlives this iteration
        if job.strategy in DYNAMIC and job.grads is not None:
            try:
                job.trajectory = read_rank_trajectory(folder / GRADS, PHASE)
            except Exception as exc:  # as above: the trajectory is lost, the rest of the job is not
                notes.append(f"{job.where}: unreadable ranks in {GRADS} ({type(exc).__name__}: {exc})")
        if (folder / REWARD_GRADS).exists():  # profile.per_reward: S_k(l) per reward, a few vectors
            try:
                job.rewards = read_reward_summary(folder / REWARD_GRADS, folder / GRADS, job.grads)
            except Exception as exc:  # as above: the per-reward landscapes are lost, the rest is not
                notes.append(f"{job.where}: unreadable {REWARD_GRADS} ({type(exc).__name__}: {exc})")
        job.outcomes = read_outcomes(folder / OUTCOMES)
        if job.strategy != "none" and job.grads is None:
            notes.append(f"{job.where}: no {PHASE}-phase gradient records")
        elif job.grads is not None and job.grads.norms.empty_steps:
            notes.append(empty_steps_note(job.where, job.grads.norms))
        if job.outcomes is None:
            notes.append(f"{job.where}: no {OUTCOMES}; left out of the paired tests")
    return jobs, notes


