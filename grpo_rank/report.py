"""The cross-run report of one or more sweeps: Table 1, the gradient-share figures, the statistics of the
study, paired tests between strategies, and a W&B run that mirrors them.

    python -m grpo_rank.report multirun/2025-06-01/12-00-00
    python -m grpo_rank.report multirun/2025-06-01/12-00-00 multirun/2025-06-02/09-30-00 --out report/
    python -m grpo_rank.report SWEEP --early 0.2 --late 0.2 --no-wandb
    python -m grpo_rank.report SWEEP --wandb-report     # also a W&B dashboard (online, wandb-workspaces)

Writes into `<first sweep>/report/` (or --out): report.md (also printed), table1.csv, runs.csv,
stats.csv, paired.csv, fig1_uniform_grad_share.png and fig2_amplification.png. Partial sweeps are fine:
jobs without result.json, failed jobs, and jobs that Hydra's multirun.yaml expected but never started
are listed. When the same job (model, task, strategy, budget, seed) appears in several sweeps, a finished
one wins over a failed one and a later sweep on the command line over an earlier one.

Every statistic is defined in grpo_rank/stats.py and again in the report's "Definitions" section.
Gradient statistics use the training phase's records ("train"), the gradients of the run at its own ranks.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import stats
from .importance import module_norms
from .records import GRADS, OUTCOMES, RESULT, JobRecord, load_job

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = ATTENTION + FFN
STRATEGY_ORDER = ("none", "uniform", "proportional", "random")
# Hydra's sweep subdir in conf/config.yaml: ${hydra.job.num}_${strategy.name}_${budget.name}_s${seed}
JOB_DIR = re.compile(r"^(?P<num>\d+)_(?P<strategy>[^_]+)_(?P<budget>[^_]+)_s(?P<seed>-?\d+)$")
PHASE = "train"

FIG1 = "fig1_uniform_grad_share.png"
FIG2 = "fig2_amplification.png"


@dataclass
class Grads:
    """Module gradient norms of one job's training phase as a (steps x layers x modules) cube.

    Each entry is a module's norm sqrt(||grad A||^2 + ||grad B||^2), as importance.module_norms defines
    it; S(l) is the cube summed over modules and averaged over steps, as importance.importance does.
    """

    steps: np.ndarray
    modules: list[str]
    cube: np.ndarray

    @property
    def num_layers(self) -> int:
        return self.cube.shape[1]

    def step_layer(self, modules: set[str] | None = None) -> np.ndarray:
        cols = [i for i, m in enumerate(self.modules) if modules is None or m in modules]
        return self.cube[:, :, cols].sum(axis=2)

    def importance(self, modules: set[str] | None = None) -> np.ndarray:
        return self.step_layer(modules).mean(axis=0)

    def module_totals(self) -> dict[str, float]:
        """Per projection type: its norm summed over layers, averaged over steps."""
        per = self.cube.sum(axis=1).mean(axis=0)
        return {m: float(v) for m, v in zip(self.modules, per)}


def grad_cube(grads: dict[str, np.ndarray], phase: str = PHASE) -> Grads | None:
    norms = module_norms(grads, phase)
    if not norms:
        return None
    steps = np.array(sorted({k[0] for k in norms}))
    present = {k[2] for k in norms}
    modules = [m for m in PROJECTIONS if m in present] + sorted(present - set(PROJECTIONS))
    cube = np.zeros((len(steps), 1 + max(k[1] for k in norms), len(modules)))
    s_idx = {s: i for i, s in enumerate(steps)}
    m_idx = {m: i for i, m in enumerate(modules)}
    for (step, layer, module), v in norms.items():
        cube[s_idx[step], layer, m_idx[module]] = v
    return Grads(steps=steps, modules=modules, cube=cube)


@dataclass
class Job:
    sweep: Path
    name: str
    status: str  # ok | failed | missing | other statuses result.json may hold (dry_run, running)
    detail: str = ""
    strategy: str = "?"
    budget: str = "?"
    seed: int | None = None
    model: str = "?"
    task: str = "?"
    budget_fraction: float | None = None
    result: dict | None = None
    record: JobRecord | None = None
    grads: Grads | None = None
    outcomes: list[dict] = field(default_factory=list)
    superseded_by: str | None = None

    @property
    def arm(self) -> tuple[str, str, str, str]:
        return (self.model, self.task, self.strategy, self.budget)

    @property
    def where(self) -> str:
        return f"{self.sweep.parent.name}/{self.sweep.name}/{self.name}"

    @property
    def ranks(self) -> list[int] | None:
        alloc = (self.result or {}).get("allocation") or {}
        return alloc.get("ranks")

    @property
    def evaluation(self) -> dict:
        return (self.result or {}).get("eval") or {}

    @property
    def params(self) -> int | None:
        p = (self.result or {}).get("params") or {}
        return p.get("built") if p.get("built") is not None else p.get("planned")


def _overrides(items) -> dict[str, str]:
    """{'strategy': 'uniform', 'seed': '0'} from Hydra override strings like '+strategy=uniform'."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _sweep_defaults(sweep: Path) -> dict:
    """The composed config in multirun.yaml: values of the axes a job did not override."""
    path = sweep / "multirun.yaml"
    if not path.exists():
        return {}
    import yaml

    cfg = yaml.safe_load(path.read_text()) or {}

    def name(key: str) -> str | None:
        node = cfg.get(key)
        return node.get("name") if isinstance(node, dict) else None

    return {"strategy": name("strategy"), "budget": name("budget"), "model": name("model"), "task": name("task"),
            "seed": cfg.get("seed")}


def expected_jobs(sweep: Path) -> tuple[list[dict] | None, str]:
    """The jobs Hydra's basic sweeper launched for this sweep, in job-number order, from multirun.yaml:
    [{'num': 0, 'overrides': {...}}, ...], or None and why it could not be derived."""
    path = sweep / "multirun.yaml"
    if not path.exists():
        return None, "no multirun.yaml"
    try:
        import yaml
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
        sweeper = hydra.get("sweeper") or {}
        if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None, f"sweeper {sweeper.get('_target_')} is not Hydra's basic sweeper"
        # the basic sweeper puts its `params` before the command line's overrides, as here
        args = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        args += list((hydra.get("overrides") or {}).get("task") or [])
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
        return [{"num": i, "overrides": _overrides(ovs)} for i, ovs in enumerate(batches[0])], ""
    except Exception as exc:  # a report on a partial sweep must not die on a config it cannot parse
        return None, f"could not read multirun.yaml ({type(exc).__name__}: {exc})"


def _label(job: Job, overrides: dict, defaults: dict) -> None:
    """Fill a job's axes from its overrides, the sweep's defaults, then its folder name."""
    m = JOB_DIR.match(job.name)
    folder = m.groupdict() if m else {}
    for key in ("strategy", "budget", "model", "task"):
        value = overrides.get(key) or folder.get(key) or defaults.get(key)
        if value:
            setattr(job, key, str(value))
    seed = overrides.get("seed", folder.get("seed", defaults.get("seed")))
    try:
        job.seed = int(seed) if seed is not None else None
    except ValueError:
        job.seed = None


def _job_from_result(sweep: Path, folder: Path) -> Job:
    record = load_job(folder)
    res = record.result
    ident = res.get("job") or {}
    status = res.get("status", "?")
    detail = res.get("error") or ""
    if status == "dry_run":
        detail = "dry run: no training or evaluation"
    elif status == "running":
        detail = "result.json says running: the job was killed before it finished"
    return Job(sweep=sweep, name=folder.name, status=status, detail=detail, record=record, result=res,
               strategy=str(ident.get("strategy", "?")), budget=str(ident.get("budget", "?")),
               seed=ident.get("seed"), model=str(ident.get("model", "?")), task=str(ident.get("task", "?")),
               budget_fraction=ident.get("budget_fraction"))


def _job_number(folder: str) -> int | None:
    """Hydra's job number, the folder name's leading `<num>_`; None for other names."""
    head = folder.split("_")[0]
    return int(head) if head.isdigit() else None


def discover(sweep: Path) -> tuple[list[Job], list[str]]:
    """Every job of one sweep folder, finished or not, without reading gradients yet; and notes."""
    notes: list[str] = []
    if (sweep / RESULT).exists():  # a single job folder given directly
        return [_job_from_result(sweep.parent, sweep)], notes
    defaults = _sweep_defaults(sweep)
    jobs: list[Job] = []
    folders = sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p.name not in ("report", "wandb")
                      and ((p / RESULT).exists() or (p / ".hydra").is_dir() or JOB_DIR.match(p.name))),
                     key=lambda p: (_job_number(p.name) is None, _job_number(p.name) or 0, p.name))
    for folder in folders:
        if (folder / RESULT).exists():
            try:
                jobs.append(_job_from_result(sweep, folder))
                continue
            except (OSError, ValueError) as exc:  # a torn or hand-edited result.json: report it, go on
                job = Job(sweep=sweep, name=folder.name, status="failed",
                          detail=f"unreadable result.json ({type(exc).__name__}: {exc})")
        else:
            job = Job(sweep=sweep, name=folder.name, status="missing",
                      detail="no result.json (still running, or killed before it finished)")
        ov_path = folder / ".hydra" / "overrides.yaml"
        overrides = {}
        if ov_path.exists():
            import yaml

            overrides = _overrides(yaml.safe_load(ov_path.read_text()))
        _label(job, overrides, defaults)
        jobs.append(job)

    expected, why = expected_jobs(sweep)
    if expected is None:
        if why != "no multirun.yaml":
            notes.append(f"{sweep}: {why}; only job folders are listed")
    else:
        nums = {_job_number(p.name) for p in folders} - {None}
        if folders and not nums:
            notes.append(f"{sweep}: job folders are not named <job number>_...; jobs that never started "
                         "cannot be matched to multirun.yaml")
        else:
            for exp in expected:
                if exp["num"] not in nums:
                    job = Job(sweep=sweep, name=f"{exp['num']}_(no folder)", status="missing",
                              detail="expected by multirun.yaml, no job folder (never started)")
                    _label(job, exp["overrides"], defaults)
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
    return jobs, notes


def load(sweeps: list[Path], progress: bool = True) -> tuple[list[Job], list[str]]:
    """All jobs of all sweeps, with gradients and outcomes read for the finished ones."""
    from tqdm.auto import tqdm

    jobs: list[Job] = []
    notes: list[str] = []
    for sweep in sweeps:
        found, more = discover(sweep)
        jobs += found
        notes += more
    _dedupe(jobs, notes)
    for job in tqdm([j for j in jobs if j.status == "ok" and j.superseded_by is None], desc="loading jobs", unit="job",
                    disable=not progress, file=sys.stderr):
        try:
            raw = job.record.grads
        except Exception as exc:  # a corrupt parquet costs this job its gradient statistics, nothing more
            notes.append(f"{job.where}: unreadable {GRADS} ({type(exc).__name__}: {exc})")
            raw = None
        job.grads = grad_cube(raw) if raw is not None else None
        job.outcomes = job.record.outcomes
        if job.strategy != "none" and job.grads is None:
            notes.append(f"{job.where}: no {PHASE}-phase gradient records")
        if not job.outcomes:
            notes.append(f"{job.where}: no {OUTCOMES}; left out of the paired tests")
    return jobs, notes


def _dedupe(jobs: list[Job], notes: list[str]) -> None:
    """One job per (model, task, strategy, budget, seed): finished beats unfinished, later beats earlier."""
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


def _strategy_key(strategy: str) -> tuple:
    return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), strategy)


def arm_sort_key(arm: tuple, fraction: float | None = None) -> tuple:
    model, task, strategy, budget = arm
    return (model, task, _strategy_key(strategy), -(fraction if fraction is not None else 0.0), budget)


def active(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "ok" and j.superseded_by is None]


def arms_of(jobs: list[Job]) -> dict[tuple, list[Job]]:
    """Finished jobs by arm (model, task, strategy, budget), seeds in order; arms in report order."""
    out: dict[tuple, list[Job]] = defaultdict(list)
    for job in active(jobs):
        out[job.arm].append(job)
    fractions = {arm: next((j.budget_fraction for j in js if j.budget_fraction is not None), None)
                 for arm, js in out.items()}
    return {arm: sorted(out[arm], key=lambda j: (j.seed is None, j.seed or 0))
            for arm in sorted(out, key=lambda a: arm_sort_key(a, fractions[a]))}


def uniform_reference(arms: dict[tuple, list[Job]], arm: tuple) -> tuple | None:
    """The uniform arm a strategy is compared with: same model, task and budget; else the full budget."""
    model, task, _, budget = arm
    same = (model, task, "uniform", budget)
    if same in arms:
        return same
    candidates = [a for a in arms if a[:3] == (model, task, "uniform")]
    full = [a for a in candidates if any(j.budget_fraction == 1.0 for j in arms[a])]
    return (full or candidates or [None])[0]


def base_reference(arms: dict[tuple, list[Job]], arm: tuple) -> tuple | None:
    """The base-model arm (strategy none) of the same model and task; its budget is irrelevant."""
    found = [a for a in arms if a[:3] == (arm[0], arm[1], "none")]
    return found[0] if found else None


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.{digits}f}"
    return str(x)


def _interval(lo, hi, digits: int = 3) -> str:
    if lo is None or hi is None or any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "n/a"
    return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _seed_label(job: Job) -> str:
    return f"s{job.seed}" if job.seed is not None else "s?"


def table1_rows(jobs: list[Job]) -> list[dict]:
    """Table 1: one row per (model, task, strategy, budget), also for arms with no finished job."""
    arms = arms_of(jobs)
    all_arms: dict[tuple, float | None] = {arm: js[0].budget_fraction for arm, js in arms.items()}
    for job in jobs:
        if job.superseded_by is None and "?" not in job.arm[2:] and job.arm not in all_arms:
            all_arms[job.arm] = job.budget_fraction
    rows = []
    for arm in sorted(all_arms, key=lambda a: arm_sort_key(a, all_arms[a])):
        done = arms.get(arm, [])
        mine = [j for j in jobs if j.arm == arm and j.superseded_by is None]
        ranks = [r for j in done for r in (j.ranks or [])]
        accs = [j.evaluation["accuracy"] for j in done if "accuracy" in j.evaluation]
        mean, lo, hi = stats.t_interval(accs) if accs else (math.nan, math.nan, math.nan)
        params = sorted({j.params for j in done if j.params is not None})
        ns = sorted({j.evaluation.get("n") for j in done if j.evaluation.get("n") is not None})
        wilson = []
        for j in done:
            ev = j.evaluation
            if "ci_low" in ev and "ci_high" in ev:
                w = (ev["ci_low"], ev["ci_high"])
            elif "correct" in ev and "n" in ev:
                w = stats.wilson_interval(ev["correct"], ev["n"])
            else:
                continue
            wilson.append(f"{_seed_label(j)} {_interval(*w)}")
        pfr = [j.evaluation["parse_failure_rate"] for j in done if "parse_failure_rate" in j.evaluation]
        model, task, strategy, budget = arm
        rows.append({
            "model": model, "task": task, "strategy": strategy, "budget": budget,
            "budget_fraction": all_arms[arm] if all_arms[arm] is not None else "",
            "rank_min": min(ranks) if ranks else "", "rank_max": max(ranks) if ranks else "",
            "rank_range": (f"{min(ranks)}-{max(ranks)}" if ranks else ("none (base model)" if strategy == "none" else "")),
            "rank_total": "; ".join(sorted({str(sum(j.ranks)) for j in done if j.ranks})),
            "trainable_params": "-".join(str(p) for p in (params[:1] + params[-1:] if len(params) > 1 else params)),
            "seeds": " ".join(_seed_label(j) for j in done),
            "accuracy_per_seed": "; ".join(f"{_seed_label(j)} {j.evaluation['accuracy']:.4f}" for j in done if "accuracy" in j.evaluation),
            "accuracy_mean": mean if accs else "",
            "accuracy_ci95_low": lo if len(accs) >= 2 else "n/a",
            "accuracy_ci95_high": hi if len(accs) >= 2 else "n/a",
            "accuracy_interval": "t-interval across seeds" if len(accs) >= 2 else "n/a (fewer than 2 seeds)",
            "wilson_per_run": "; ".join(wilson),
            "n_questions": "; ".join(str(n) for n in ns),
            "parse_failure_rate_mean": float(np.mean(pfr)) if pfr else "",
            "n_ok": len(done),
            "n_failed": sum(j.status == "failed" for j in mine),
            "n_missing": sum(j.status not in ("ok", "failed") for j in mine),
        })
    return rows


def run_rows(jobs: list[Job]) -> list[dict]:
    """Every job found or expected, one row each, with its status."""
    rows = []
    for j in jobs:
        ev, ranks = j.evaluation, j.ranks
        train = (j.result or {}).get("train") or {}
        rows.append({
            "sweep": str(j.sweep), "job": j.name, "status": j.status, "detail": j.detail,
            "superseded_by": j.superseded_by or "", "model": j.model, "task": j.task, "strategy": j.strategy,
            "budget": j.budget, "seed": "" if j.seed is None else j.seed,
            "accuracy": ev.get("accuracy", ""), "correct": ev.get("correct", ""), "n": ev.get("n", ""),
            "wilson_low": ev.get("ci_low", ""), "wilson_high": ev.get("ci_high", ""),
            "parse_failure_rate": ev.get("parse_failure_rate", ""),
            "rank_min": min(ranks) if ranks else "", "rank_max": max(ranks) if ranks else "",
            "rank_total": sum(ranks) if ranks else "", "trainable_params": "" if j.params is None else j.params,
            "nonzero_spread_fraction": train.get("nonzero_spread_fraction", ""),
            "grad_steps": len(j.grads.steps) if j.grads is not None else "",
        })
    return rows


def _row(arm: tuple, seed: str, subset: str, statistic: str, value: float, lo=math.nan, hi=math.nan,
         n: int | str = "", note: str = "") -> dict:
    model, task, strategy, budget = arm
    return {"model": model, "task": task, "strategy": strategy, "budget": budget, "seed": seed,
            "subset": subset, "statistic": statistic, "value": value, "ci_low": lo, "ci_high": hi, "n": n,
            "note": note}


def _with_means(per_seed: list[dict]) -> list[dict]:
    """Append, per (arm, subset, statistic), the mean over seeds with its t-interval (seed = 'mean')."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in per_seed:
        groups[(r["model"], r["task"], r["strategy"], r["budget"], r["subset"], r["statistic"])].append(r)
    out = list(per_seed)
    for (model, task, strategy, budget, subset, statistic), rows in groups.items():
        vals = [r["value"] for r in rows if np.isfinite(r["value"])]
        if not vals:
            continue
        mean, lo, hi = stats.t_interval(vals)
        notes = sorted({r["note"] for r in rows if r["note"]})
        out.append(_row((model, task, strategy, budget), "mean", subset, statistic, mean, lo, hi, len(vals),
                        "; ".join(notes)))
    return out


def stats_rows(jobs: list[Job], early: float = 0.25, late: float = 0.25) -> list[dict]:
    """The study's statistics in long form: per seed (seed = 's0', ...), their mean over seeds
    (seed = 'mean', with a t-interval) and pooled rank-shift correlations (seed = 'pooled', with a
    bootstrap interval over seeds)."""
    arms = arms_of(jobs)
    per_seed: list[dict] = []
    pooled: list[dict] = []
    for arm, arm_jobs in arms.items():
        with_grads = [j for j in arm_jobs if j.grads is not None]
        for j in with_grads:
            seed = _seed_label(j)
            g = j.grads
            for key, value in stats.concentration(g.importance()).items():
                per_seed.append(_row(arm, seed, "all", key, value))
            for proj in g.modules:
                for key, value in stats.concentration(g.importance({proj})).items():
                    per_seed.append(_row(arm, seed, proj, key, value))
            el = stats.early_late_stability(g.step_layer(), early, late)
            note = (f"first {int(el['n_early'])} vs last {int(el['n_late'])} of {len(g.steps)} steps"
                    + ("; windows overlap" if el["overlap"] else ""))
            per_seed.append(_row(arm, seed, "all", "early_late_pearson", el["pearson"], note=note))
            per_seed.append(_row(arm, seed, "all", "early_late_spearman", el["spearman"], note=note))
            totals = g.module_totals()
            groups = {"attention": ATTENTION, "ffn": FFN, **{p: (p,) for p in g.modules}}
            for name, value in stats.group_shares(totals, groups).items():
                per_seed.append(_row(arm, seed, "modules", f"share_{name}", value))

        if arm[2] in ("none", "uniform") or not with_grads:
            continue
        ref_arm = uniform_reference(arms, arm)
        if ref_arm is None:
            continue
        ref_note = f"vs uniform/{ref_arm[3]}"
        ref_by_seed = {j.seed: j for j in arms[ref_arm] if j.grads is not None}
        ranks_all, shifts_all = [], []
        for j in with_grads:
            ref = ref_by_seed.get(j.seed)
            if ref is None or ref.grads.num_layers != j.grads.num_layers:
                continue
            seed = _seed_label(j)
            s_x, s_u = j.grads.importance(), ref.grads.importance()
            per_seed.append(_row(arm, seed, "all", "amplification_max_min",
                                 stats.max_min_ratio(s_x) / stats.max_min_ratio(s_u), note=ref_note))
            per_seed.append(_row(arm, seed, "all", "amplification_cv", stats.cv(s_x) / stats.cv(s_u), note=ref_note))
            if j.ranks and len(j.ranks) == j.grads.num_layers:
                shift = stats.shares(s_x) - stats.shares(s_u)
                corr = stats.correlation(j.ranks, shift)
                per_seed.append(_row(arm, seed, "all", "rank_shift_pearson", corr["pearson"], note=ref_note))
                per_seed.append(_row(arm, seed, "all", "rank_shift_spearman", corr["spearman"], note=ref_note))
                ranks_all.append(np.asarray(j.ranks, dtype=float))
                shifts_all.append(shift)
        if ranks_all:
            boot = stats.seed_bootstrap_correlation(ranks_all, shifts_all)
            note = ref_note + ("; bootstrap over seeds" if len(ranks_all) >= 2 else "; one seed: no interval")
            for key in ("pearson", "spearman"):
                pooled.append(_row(arm, "pooled", "all", f"rank_shift_{key}", boot[key], boot[f"{key}_low"],
                                   boot[f"{key}_high"], len(ranks_all), note))
    return _with_means(per_seed) + pooled


def _aligned(ref: Job, other: Job) -> tuple[list, np.ndarray, np.ndarray]:
    """Question ids both jobs answered, in the reference's order, and each job's correctness on them."""
    def key(o: dict) -> str:
        return str(o.get("id", o.get("index")))

    mine = {key(o): bool(o.get("correct")) for o in other.outcomes}
    ids = [key(o) for o in ref.outcomes if key(o) in mine]
    theirs = {key(o): bool(o.get("correct")) for o in ref.outcomes}
    return ids, np.array([theirs[i] for i in ids]), np.array([mine[i] for i in ids])


def paired_rows(jobs: list[Job]) -> list[dict]:
    """Each strategy vs uniform and vs the base model, on the questions both answered: per seed pair and
    pooled over seed pairs (exact McNemar on the summed discordant counts; bootstrap over questions)."""
    arms = arms_of(jobs)
    rows = []
    for arm, arm_jobs in arms.items():
        refs = []
        if arm[2] not in ("uniform", "none"):
            refs.append(uniform_reference(arms, arm))
        if arm[2] != "none":
            refs.append(base_reference(arms, arm))
        for ref_arm in [r for r in refs if r is not None]:
            is_base = ref_arm[2] == "none"
            label = "none (base model)" if is_base else f"uniform/{ref_arm[3]}"
            ref_jobs = [j for j in arms[ref_arm] if j.outcomes]
            pairs = []
            for j in arm_jobs:
                if not j.outcomes:
                    continue
                same = [r for r in ref_jobs if r.seed == j.seed]
                # the base model is not trained, so one evaluation serves every seed when it has no twin
                ref = same[0] if same else (ref_jobs[0] if is_base and ref_jobs else None)
                if ref is not None:
                    pairs.append((j, ref))
            for j, ref in pairs:
                ids, a, b = _aligned(ref, j)
                if not ids:
                    continue
                rows.append(_paired_row(arm, label, f"{_seed_label(j)} vs {_seed_label(ref)}", a[None, :], b[None, :]))
            if len(pairs) >= 2:
                common = None
                for j, ref in pairs:
                    ids = set(_aligned(ref, j)[0])
                    common = ids if common is None else common & ids
                if common:
                    a_rows, b_rows = [], []
                    for j, ref in pairs:
                        ids, a, b = _aligned(ref, j)
                        keep = np.array([i in common for i in ids])
                        a_rows.append(a[keep])
                        b_rows.append(b[keep])
                    rows.append(_paired_row(arm, label, f"pooled ({len(pairs)} pairs)", np.array(a_rows), np.array(b_rows)))
    return rows


def _paired_row(arm: tuple, ref_label: str, seeds: str, ref: np.ndarray, other: np.ndarray) -> dict:
    b = int(np.sum(ref & ~other))
    c = int(np.sum(~ref & other))
    mc = stats.mcnemar_counts(b, c, both=int(np.sum(ref & other)), neither=int(np.sum(~ref & ~other)))
    boot = stats.paired_bootstrap_diff(ref.astype(float), other.astype(float))
    model, task, strategy, budget = arm
    return {"model": model, "task": task, "strategy": strategy, "budget": budget, "reference": ref_label,
            "seeds": seeds, "n_questions": ref.shape[1], "n_pairs": ref.shape[0],
            "acc_reference": float(ref.mean()), "acc_strategy": float(other.mean()), "diff": boot["diff"],
            "diff_low": boot["low"], "diff_high": boot["high"], "b_reference_only": b, "c_strategy_only": c,
            "mcnemar_p": mc["pvalue"]}


def _mean_share_maps(arm_jobs: list[Job]) -> np.ndarray | None:
    maps = [stats.shares(j.grads.importance()) for j in arm_jobs if j.grads is not None]
    if not maps or len({m.size for m in maps}) != 1:
        return None
    return np.vstack(maps)


def figure1(jobs: list[Job], path: Path) -> None:
    """Per-layer gradient share under uniform ranks: mean over seeds, band min-max, one dot per seed."""
    from matplotlib.figure import Figure

    arms = arms_of(jobs)
    panels: dict[tuple, list[tuple]] = defaultdict(list)
    for arm in arms:
        if arm[2] == "uniform" and _mean_share_maps(arms[arm]) is not None:
            panels[arm[:2]].append(arm)
    fig = Figure(figsize=(8, 3.6 * max(1, len(panels))), layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no uniform-rank job with gradient records", ha="center", va="center")
        ax.set_axis_off()
    for i, (mt, mt_arms) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for arm in mt_arms:
            maps = _mean_share_maps(arms[arm])
            x = np.arange(maps.shape[1])
            mean = maps.mean(axis=0)
            line, = ax.plot(x, mean, marker="o", ms=3, label=f"uniform/{arm[3]}: mean of {len(maps)} seed(s)")
            if len(maps) > 1:
                ax.fill_between(x, maps.min(axis=0), maps.max(axis=0), color=line.get_color(), alpha=0.25,
                                label="min-max over seeds")
                for m in maps:
                    ax.plot(x, m, ".", color=line.get_color(), alpha=0.5, ms=4)
            ax.axhline(1 / maps.shape[1], color="grey", ls="--", lw=1, label="equal share 1/L")
        ax.set_title(f"{mt[0]} / {mt[1]}: per-layer share of the LoRA gradient norm (uniform ranks)")
        ax.set_xlabel("layer")
        ax.set_ylabel("share of sum over layers")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def figure2(jobs: list[Job], path: Path) -> None:
    """Normalised importance under uniform vs each other strategy, allocated ranks on a second axis."""
    from matplotlib.figure import Figure

    arms = arms_of(jobs)
    panels = []
    for arm, arm_jobs in arms.items():
        ref = uniform_reference(arms, arm) if arm[2] not in ("none", "uniform") else None
        if ref is None:
            continue
        mine, theirs = _mean_share_maps(arm_jobs), _mean_share_maps(arms[ref])
        if mine is not None and theirs is not None and mine.shape[1] == theirs.shape[1]:
            panels.append((arm, ref, mine, theirs))
    fig = Figure(figsize=(8, 3.6 * max(1, len(panels))), layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no non-uniform strategy with a uniform reference and gradient records",
                ha="center", va="center")
        ax.set_axis_off()
    for i, (arm, ref, mine, theirs) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        x = np.arange(mine.shape[1])
        ranks = np.array([j.ranks for j in arms[arm] if j.grads is not None and j.ranks
                          and len(j.ranks) == mine.shape[1]], dtype=float)
        ax2 = ax.twinx()
        if ranks.size:
            mean = ranks.mean(axis=0)
            varies = bool(np.ptp(ranks, axis=0).any())  # random ranks differ by seed; profiled ones may not
            ax2.bar(x, mean, color="tab:green", alpha=0.25,
                    label=f"allocated rank ({arm[2]}, mean{', min-max' if varies else ''} over seeds)",
                    yerr=(mean - ranks.min(axis=0), ranks.max(axis=0) - mean) if varies else None,
                    ecolor="tab:green", capsize=2)
            ax2.set_ylabel("LoRA rank")
        ax.set_zorder(ax2.get_zorder() + 1)  # the lines over the bars
        ax.patch.set_visible(False)
        for maps, label, color in ((theirs, f"uniform/{ref[3]}", "tab:blue"), (mine, f"{arm[2]}/{arm[3]}", "tab:red")):
            ax.plot(x, maps.mean(axis=0), marker="o", ms=3, color=color, label=f"{label} (mean of {len(maps)})")
            if len(maps) > 1:
                ax.fill_between(x, maps.min(axis=0), maps.max(axis=0), color=color, alpha=0.2)
        ax.set_title(f"{arm[0]} / {arm[1]}: {arm[2]}/{arm[3]} vs uniform/{ref[3]}")
        ax.set_xlabel("layer")
        ax.set_ylabel("share of gradient norm")
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=8, loc="upper left")
    fig.savefig(path, dpi=120)


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            # repr keeps every digit of a float, so a reader gets back the number the report computed
            w.writerow({k: repr(float(v)) if isinstance(v, (float, np.floating)) else v for k, v in r.items()})


def md_table(headers: list[str], rows: list[list]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    # a pipe inside a cell would end it early
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _arm_label(r: dict) -> list:
    return [r["model"], r["task"], r["strategy"], r["budget"]]


def _lookup(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["task"], r["strategy"], r["budget"], r["seed"], r["subset"], r["statistic"]): r for r in rows}


def _cell(index: dict, arm: tuple, statistic: str, subset: str = "all", seed: str = "mean") -> str:
    r = index.get((*arm, seed, subset, statistic))
    if r is None:
        return "n/a"
    ci = _interval(r["ci_low"], r["ci_high"])
    return _fmt(r["value"]) + ("" if ci == "n/a" else f" {ci}")


DEFINITIONS = """\
- **S(l)**, the importance of layer l: the sum over the layer's LoRA modules of each module's gradient
  norm sqrt(||grad A||^2 + ||grad B||^2) (before clipping), averaged over the training steps (the
  study's Eq. 2; `grpo_rank/importance.py`). Its **share** is S(l) / sum over layers of S.
- **max/min**: max_l S(l) / min_l S(l), over the per-layer means S(l).
- **top-30% share**: the layers sorted by S(l), descending; the share carried by the first
  ceil(0.3 L) of them (L = 28 gives 9 layers, L = 30 gives 9, L = 12 gives 4).
- **Gini**: sum_i sum_j |S_i - S_j| / (2 L^2 mean S), 0 for equal shares, (L-1)/L at the extreme.
- **CV**: population standard deviation of S(l) over layers / its mean.
- **early-vs-late stability**: S(l) over the first ceil({early} T) steps vs over the last ceil({late} T)
  of the T recorded steps; Pearson r and Spearman rho across layers. 1: the ranking seen early holds.
- **amplification** of a strategy: its max/min (and CV) of S(l) divided by uniform's, same seed
  (> 1: the re-allocated run's gradients are more uneven than the uniform run's).
- **rank-shift correlation**: per layer, shift = share under the strategy - share under uniform (same
  seed), correlated with the layer's allocated rank (Pearson, Spearman). Pooled over the (seed, layer)
  pairs; its interval resamples seeds (all S^S resamples when S <= 4), given for >= 2 seeds and crude
  for 2-3. Since a LoRA matrix's gradient norm grows with its size, part of any positive correlation
  is the rank itself; compare the same-shape statistics and the module shares.
- **module shares**: each projection type's norm summed over layers, averaged over steps, divided by
  the total; attention = q,k,v,o; FFN = gate,up,down. **Same-shape statistics** repeat max/min,
  top-30% and Gini on one projection type at a time (identical shapes across layers), so that
  differences between projection sizes cannot drive them.
- **seed summaries**: a statistic is computed per seed, then averaged; the interval is a Student-t
  95% interval across seeds (n/a with one seed).
- **accuracy**: per run with its 95% Wilson interval (from the job's result.json); across seeds, the
  mean and a t-interval (n/a with one seed).
- **paired tests** (same questions, matched by question id): b = questions only the reference got
  right, c = questions only the strategy got right; exact McNemar p = min(1, 2 P(X <= min(b, c))),
  X ~ Binomial(b + c, 1/2) (statsmodels). The accuracy difference (strategy - reference) has a 95%
  percentile bootstrap interval resampling questions (10,000 resamples, seed 0). A strategy seed is
  paired with the reference's same seed; the base model, which is not trained, with its own seed if
  run, else with its one evaluation. The pooled row sums b and c over seed pairs (treating the pairs as
  independent, which repeated questions are not quite) and bootstraps questions with all their pairs.
"""

WANDB_PANELS = """\
Each job is one W&B run, grouped by `group` (the config without the seed, so a group's runs are the
seeds of one strategy x budget) and tagged `strategy:<name>`, `budget:<name>`, `seed:<n>`. Open:
`grad_share/layer_XX` (per-layer share of the gradient norm per step; the live Figure 1),
`grad_norm/layer_XX` (the raw norms), `grad_share_module/<proj>` (module shares), and
`eval/accuracy` with `eval/ci_low` / `eval/ci_high` in the run summary (Table 1 per run). Grouping
the runs table by the `strategy` config key (`strategy.name`), or by `group`, averages the panels over
seeds. The report run itself (job type `report`) holds these tables and figures.
"""


def render(jobs: list[Job], notes: list[str], sweeps: list[Path], t1: list[dict], st: list[dict],
           paired: list[dict], early: float, late: float, wandb_line: str) -> str:
    arms = arms_of(jobs)
    idx = _lookup(st)
    n_ok = len(active(jobs))
    out = ["# grpo-rank report", ""]
    out.append(f"Sweeps: {', '.join(f'`{s}`' for s in sweeps)}  ")
    out.append(f"Generated {dt.datetime.now().isoformat(timespec='seconds')}; {len(jobs)} jobs found or expected, "
               f"{n_ok} finished and used, {sum(j.status == 'failed' for j in jobs)} failed, "
               f"{sum(j.status not in ('ok', 'failed') for j in jobs)} missing or unfinished.")
    out.append("")

    out += ["## Table 1: accuracy by strategy and budget", ""]
    out.append(md_table(
        ["model", "task", "strategy", "budget", "ranks", "trainable params", "accuracy per seed",
         "mean [95% t-interval]", "Wilson 95% per run", "n", "ok/failed/missing"],
        [[r["model"], r["task"], r["strategy"], r["budget"], r["rank_range"], r["trainable_params"],
          r["accuracy_per_seed"],
          (_fmt(r["accuracy_mean"], 4) if r["accuracy_mean"] != "" else "n/a") + " "
          + (_interval(r["accuracy_ci95_low"], r["accuracy_ci95_high"]) if r["accuracy_ci95_low"] != "n/a" else "n/a"),
          r["wilson_per_run"], r["n_questions"], f"{r['n_ok']}/{r['n_failed']}/{r['n_missing']}"] for r in t1]))

    out += ["## Missing and failed jobs", ""]
    bad = [j for j in jobs if j.status != "ok"]
    out.append(md_table(["sweep", "job", "strategy", "budget", "seed", "status", "detail"],
                        [[str(j.sweep), j.name, j.strategy, j.budget, "" if j.seed is None else j.seed, j.status,
                          j.detail + (f" (superseded by {j.superseded_by})" if j.superseded_by else "")]
                         for j in bad]))
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]

    out += ["## Figures", "",
            f"Figure 1, per-layer gradient share under uniform ranks (mean over seeds, min-max band): ![fig1]({FIG1})", "",
            f"Figure 2, normalised importance, uniform vs each strategy, allocated ranks as bars: ![fig2]({FIG2})", ""]

    grad_arms = [a for a in arms if any(j.grads is not None for j in arms[a])]
    out += ["## Layer-importance concentration and stability", "",
            f"Training-phase gradients; mean over seeds [95% t-interval]. Early/late windows: first {early:g} "
            f"and last {late:g} of the steps.", ""]
    out.append(md_table(["model", "task", "strategy", "budget", "max/min", "top-30% share", "Gini", "CV",
                         "early-late r", "early-late rho"],
                        [[*a, _cell(idx, a, "max_min_ratio"), _cell(idx, a, "top30_share"), _cell(idx, a, "gini"),
                          _cell(idx, a, "cv"), _cell(idx, a, "early_late_pearson"),
                          _cell(idx, a, "early_late_spearman")] for a in grad_arms]))

    amp_arms = [a for a in grad_arms if a[2] not in ("none", "uniform")]
    out += ["## Amplification: each strategy vs uniform", ""]
    out.append(md_table(["model", "task", "strategy", "budget", "max/min ratio vs uniform", "CV ratio vs uniform",
                         "rank-shift r (pooled) [seed bootstrap]", "rank-shift rho (pooled) [seed bootstrap]",
                         "reference"],
                        [[*a, _cell(idx, a, "amplification_max_min"), _cell(idx, a, "amplification_cv"),
                          _cell(idx, a, "rank_shift_pearson", seed="pooled"),
                          _cell(idx, a, "rank_shift_spearman", seed="pooled"),
                          (idx.get((*a, "pooled", "all", "rank_shift_pearson")) or {}).get("note", "n/a")]
                         for a in amp_arms]))

    out += ["## Module-level gradient shares", ""]
    mods = [m for m in PROJECTIONS if any((*a, "mean", "modules", f"share_{m}") in idx for a in grad_arms)]
    out.append(md_table(["model", "task", "strategy", "budget", "attention", "FFN", *mods],
                        [[*a, _cell(idx, a, "share_attention", "modules"), _cell(idx, a, "share_ffn", "modules"),
                          *[_cell(idx, a, f"share_{m}", "modules") for m in mods]] for a in grad_arms]))

    out += ["## Same-shape modules: each projection type alone", "",
            "The statistics above restricted to one projection type, whose shape is the same in every layer.", ""]
    out.append(md_table(["model", "task", "strategy", "budget", "projection", "max/min", "top-30% share", "Gini"],
                        [[*a, m, _cell(idx, a, "max_min_ratio", m), _cell(idx, a, "top30_share", m),
                          _cell(idx, a, "gini", m)]
                         for a in grad_arms for m in mods if (*a, "mean", m, "gini") in idx]))

    out += ["## Paired comparisons on the same questions", "",
            "diff = accuracy(strategy) - accuracy(reference), 95% paired bootstrap interval; b = reference "
            "only right, c = strategy only right; exact McNemar p.", ""]
    out.append(md_table(["model", "task", "strategy", "budget", "reference", "seeds", "n", "acc ref", "acc strategy",
                         "diff [95% bootstrap]", "b", "c", "McNemar p"],
                        [[*_arm_label(r), r["reference"], r["seeds"], r["n_questions"], _fmt(r["acc_reference"]),
                          _fmt(r["acc_strategy"]), f"{_fmt(r['diff'])} {_interval(r['diff_low'], r['diff_high'])}",
                          r["b_reference_only"], r["c_strategy_only"], f"{r['mcnemar_p']:.4g}"] for r in paired]))

    out += ["## Definitions", "", DEFINITIONS.format(early=f"{early:g}", late=f"{late:g}"),
            "## Which W&B panels to open", "", WANDB_PANELS, "## W&B", "", wandb_line, "",
            "Files: `table1.csv`, `runs.csv` (every job), `stats.csv` (long form: per seed, `mean` with "
            "t-interval, `pooled` with seed bootstrap), `paired.csv`.", ""]
    return "\n".join(out)


def _wandb_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Columns of one type each: wandb.Table rejects a column that mixes numbers and text."""
    if not rows:
        return ["empty"], []
    cols = list(rows[0])
    numeric = {c: all(isinstance(r.get(c), (int, float, np.integer, np.floating)) and not isinstance(r.get(c), bool)
                      for r in rows) for c in cols}
    data = [[float(r[c]) if numeric[c] else ("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    return cols, data


def _wandb_identity(jobs: list[Job], sweeps: list[Path]) -> dict:
    ok = active(jobs)
    cfg = (ok[0].result.get("config") if ok else None) or {}
    tracking = cfg.get("tracking") or {}
    idents = [(j.result or {}).get("job") or {} for j in ok]
    sweep_groups = {i["sweep_group"] for i in idents if i.get("sweep_group")}
    groups = {i["group"] for i in idents if i.get("group")}
    first = sweeps[0].resolve()
    if len(sweep_groups) == 1:
        group = sweep_groups.pop()
    elif len(groups) == 1:
        group = next(iter(groups))
    else:
        # jobs are grouped per strategy x budget, so a sweep has no single group: name one after it
        group = f"sweep-{first.parent.name}-{first.name}"
    return {"project": tracking.get("project") or "grpo-rank", "entity": tracking.get("entity"), "group": group,
            "name": f"report-{first.parent.name}-{first.name}", "job_groups": sorted(groups)}


def log_wandb(out: Path, jobs: list[Job], sweeps: list[Path], tables: dict[str, list[dict]],
              figures: dict[str, Path], summary: dict, dashboard: bool) -> str:
    """Mirror the report to a W&B run (job_type 'report'); returns one line saying what happened.
    Never raises: W&B is a sink."""
    try:
        from .tracking import WandbSink, resolve_mode

        ident = _wandb_identity(jobs, sweeps)
        mode = resolve_mode("auto")
        sink = WandbSink(mode=mode, project=ident["project"], entity=ident["entity"], group=ident["group"],
                         name=ident["name"], tags=["report"], job_type="report", directory=out,
                         config={"sweeps": [str(s) for s in sweeps], "jobs": len(jobs),
                                 "finished": len(active(jobs)), "job_groups": ident["job_groups"]})
        if sink.run is None:
            line = f"W&B: not logged ({sink.error or mode})."
        else:
            for key, rows in tables.items():
                cols, data = _wandb_rows(rows)
                sink.table(f"report/{key}", cols, data)
            for key, path in figures.items():
                sink.image(f"report/{key}", path)
            sink.summary(summary)
            run_dir = Path(sink.run_dir).parent if sink.run_dir else out / "wandb"
            url = sink.run.url if mode == "online" else None  # offline runs have none and warn when asked
            sink.finish()
            if sink.error:
                line = f"W&B: logging failed ({sink.error}); the local report is complete."
            elif mode == "offline":
                line = (f"W&B: offline run `{ident['name']}` in group `{ident['group']}` at `{run_dir}`; "
                        f"upload with `wandb sync {run_dir}`.")
            else:
                line = f"W&B: run `{ident['name']}` in group `{ident['group']}`: {url}"
        if dashboard:
            line += "\n\n" + create_dashboard(ident, mode)
        return line
    except Exception as exc:  # the report is the local files; W&B must never fail it
        return f"W&B: skipped after an error ({type(exc).__name__}: {exc}); the local report is complete."


def create_dashboard(ident: dict, mode: str) -> str:
    """A W&B report with the panels named in "Which W&B panels to open" (needs wandb-workspaces, online)."""
    import importlib.util

    if importlib.util.find_spec("wandb_workspaces") is None:
        return "W&B dashboard: skipped, the wandb-workspaces package is not installed (pip install wandb-workspaces)."
    if mode != "online":
        return f"W&B dashboard: skipped, W&B mode is {mode} (no API key found); dashboards need online mode."
    try:
        import wandb
        import wandb_workspaces.reports.v2 as wr

        entity = ident["entity"] or wandb.Api().default_entity
        runs = wr.Runset(entity=entity, project=ident["project"], name="jobs by strategy",
                         groupby=["config.strategy.name"])
        layers = [f"grad_share/layer_{i:02d}" for i in range(64)]
        report = wr.Report(
            entity=entity, project=ident["project"], title=f"grpo-rank: {ident['name']}",
            description="Per-layer LoRA rank allocation under GRPO; runs grouped by strategy (mean over seeds).",
            blocks=[
                wr.H1("Accuracy and gradient shares by strategy"),
                wr.P(f"Sweep groups: {', '.join(ident['job_groups']) or 'n/a'}."),
                wr.PanelGrid(runsets=[runs], panels=[
                    wr.BarPlot(title="eval/accuracy", metrics=["eval/accuracy"]),
                    wr.LinePlot(title="per-layer gradient share", x="Step", y=layers),
                    wr.LinePlot(title="module gradient share", x="Step",
                                y=[f"grad_share_module/{m}" for m in PROJECTIONS]),
                ]),
            ])
        report.save()
        return f"W&B dashboard: {report.url}"
    except Exception as exc:
        return f"W&B dashboard: skipped after an error ({type(exc).__name__}: {exc})."


def summary_values(t1: list[dict], st: list[dict]) -> dict:
    out = {}
    for r in t1:
        if r["accuracy_mean"] != "":
            out[f"accuracy/{r['strategy']}_{r['budget']}"] = r["accuracy_mean"]
    for r in st:
        if r["seed"] in ("mean", "pooled") and r["subset"] == "all" and np.isfinite(r["value"]):
            out[f"{r['statistic']}/{r['strategy']}_{r['budget']}"] = r["value"]
    return out


@dataclass
class Report:
    out: Path
    markdown: str
    jobs: list[Job]


def build(sweeps: list[Path], out: Path, early: float = 0.25, late: float = 0.25, use_wandb: bool = True,
          dashboard: bool = False, progress: bool = True) -> Report:
    """Load the sweeps, compute every table and figure, write them under `out`, optionally mirror to W&B."""
    jobs, notes = load(sweeps, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    t1, runs, st, paired = table1_rows(jobs), run_rows(jobs), stats_rows(jobs, early, late), paired_rows(jobs)
    write_csv(out / "table1.csv", t1)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "stats.csv", st, list(_row(("", "", "", ""), "", "", "", 0.0)))
    write_csv(out / "paired.csv", paired,
              None if paired else ["model", "task", "strategy", "budget", "reference", "seeds", "n_questions",
                                   "n_pairs", "acc_reference", "acc_strategy", "diff", "diff_low", "diff_high",
                                   "b_reference_only", "c_strategy_only", "mcnemar_p"])
    figure1(jobs, out / FIG1)
    figure2(jobs, out / FIG2)
    if use_wandb:
        wandb_line = log_wandb(out, jobs, sweeps, {"table1": t1, "stats": st, "paired": paired, "runs": runs},
                               {"fig1_uniform_grad_share": out / FIG1, "fig2_amplification": out / FIG2},
                               summary_values(t1, st), dashboard)
    else:
        wandb_line = "W&B: skipped (--no-wandb)."
        if dashboard:
            wandb_line += " W&B dashboard: skipped, --no-wandb was given."
    md = render(jobs, notes, sweeps, t1, st, paired, early, late, wandb_line)
    (out / "report.md").write_text(md)
    return Report(out=out, markdown=md, jobs=jobs)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grpo_rank.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep folders multirun/<date>/<time> (or job folders)")
    p.add_argument("--out", type=Path, help="output folder (default: <first sweep>/report)")
    p.add_argument("--early", type=_fraction, default=0.25, help="fraction of steps in the early window")
    p.add_argument("--late", type=_fraction, default=0.25, help="fraction of steps in the late window")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    p.add_argument("--wandb-report", action="store_true",
                   help="also create a W&B dashboard (needs wandb-workspaces and online mode)")
    args = p.parse_args(argv)
    for s in args.sweeps:
        if not s.is_dir():
            p.error(f"{s} is not a folder")
    out = args.out or args.sweeps[0] / "report"
    rep = build(args.sweeps, out, args.early, args.late, use_wandb=not args.no_wandb, dashboard=args.wandb_report)
    if not rep.jobs:
        print(f"grpo-rank report: no job folders under {', '.join(map(str, args.sweeps))}", file=sys.stderr)
        return 2
    print(rep.markdown)
    print(f"written to {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
