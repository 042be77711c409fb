"""The report's tables as lists of rows (dicts): Table 1, every job, the study's statistics in long form,
and the paired tests; computed from the jobs' reduced arrays (discover.load), written as CSV.

Every statistic is a function of grpo_rank/stats.py; the markdown's "Definitions" section says which.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import stats
from ..importance import PROJECTIONS
from .jobs import Arm, Job, arm_sort_key, arms_of, base_reference, uniform_reference

ATTENTION = PROJECTIONS[:4]
FFN = PROJECTIONS[4:]
STATS_COLUMNS = [*Arm._fields, "seed", "subset", "statistic", "value", "ci_low", "ci_high", "n", "note"]
PAIRED_COLUMNS = [*Arm._fields, "reference", "seeds", "n_questions", "n_pairs", "acc_reference", "acc_strategy",
                  "diff", "diff_low", "diff_high", "b_reference_only", "c_strategy_only", "mcnemar_p"]


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.{digits}f}"
    return str(x)


def interval(lo, hi, digits: int = 3) -> str:
    if lo is None or hi is None or any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "n/a"
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def seed_label(job: Job) -> str:
    return f"s{job.seed}" if job.seed is not None else "s?"


def table1_rows(jobs: list[Job]) -> list[dict]:
    """Table 1: one row per arm, also for arms with no finished job."""
    arms = arms_of(jobs)
    all_arms: dict[Arm, float | None] = {arm: js[0].budget_fraction for arm, js in arms.items()}
    for job in jobs:
        if job.superseded_by is None and "?" not in (job.strategy, job.budget) and job.arm not in all_arms:
            all_arms[job.arm] = job.budget_fraction
    rows = []
    for arm in sorted(all_arms, key=lambda a: arm_sort_key(a, all_arms[a])):
        done = arms.get(arm, [])
        mine = [j for j in jobs if j.arm == arm and j.superseded_by is None]
        evals = [(j, j.result.eval) for j in done if j.result.eval is not None]
        ranks = [r for j in done for r in (j.ranks or [])]
        accs = [ev.accuracy for _, ev in evals]
        mean, lo, hi = stats.t_interval(accs) if accs else (math.nan, math.nan, math.nan)
        params = sorted({j.params for j in done if j.params is not None})
        rows.append({
            **arm._asdict(),
            "budget_fraction": all_arms[arm] if all_arms[arm] is not None else "",
            "rank_min": min(ranks) if ranks else "", "rank_max": max(ranks) if ranks else "",
            "rank_range": (f"{min(ranks)}-{max(ranks)}" if ranks
                           else ("none (base model)" if arm.strategy == "none" else "")),
            "rank_total": "; ".join(sorted({str(sum(j.ranks)) for j in done if j.ranks})),
            "trainable_params": "-".join(str(p) for p in (params[:1] + params[-1:] if len(params) > 1 else params)),
            "seeds": " ".join(seed_label(j) for j in done),
            "accuracy_per_seed": "; ".join(f"{seed_label(j)} {ev.accuracy:.4f}" for j, ev in evals),
            "accuracy_mean": mean if accs else "",
            "accuracy_ci95_low": lo if len(accs) >= 2 else "n/a",
            "accuracy_ci95_high": hi if len(accs) >= 2 else "n/a",
            "accuracy_interval": "t-interval across seeds" if len(accs) >= 2 else "n/a (fewer than 2 seeds)",
            "wilson_per_run": "; ".join(f"{seed_label(j)} {interval(ev.ci_low, ev.ci_high)}" for j, ev in evals),
            "n_questions": "; ".join(str(n) for n in sorted({ev.n for _, ev in evals})),
            "parse_failure_rate_mean": float(np.mean([ev.parse_failure_rate for _, ev in evals])) if evals else "",
            "n_ok": len(done),
            "n_failed": sum(j.status == "failed" for j in mine),
            "n_missing": sum(j.status not in ("ok", "failed") for j in mine),
        })
    return rows


def run_rows(jobs: list[Job]) -> list[dict]:
    """Every job found or expected, one row each, with its status."""
    rows = []
    for j in jobs:
        ev = j.result.eval if j.result else None
        train = j.result.train if j.result else None
        ranks = j.ranks
        rows.append({
            "sweep": str(j.sweep), "job": j.name, "status": j.status, "detail": j.detail,
            "superseded_by": j.superseded_by or "", "model": j.model, "task": j.task, "strategy": j.strategy,
            "budget": j.budget, "seed": "" if j.seed is None else j.seed,
            "accuracy": ev.accuracy if ev else "", "correct": ev.correct if ev else "", "n": ev.n if ev else "",
            "wilson_low": ev.ci_low if ev else "", "wilson_high": ev.ci_high if ev else "",
            "parse_failure_rate": ev.parse_failure_rate if ev else "",
            "rank_min": min(ranks) if ranks else "", "rank_max": max(ranks) if ranks else "",
            "rank_total": sum(ranks) if ranks else "", "trainable_params": "" if j.params is None else j.params,
            "nonzero_spread_fraction": train.nonzero_spread_fraction if train else "",
            "grad_steps": j.grads.n_steps if j.grads is not None else "",
        })
    return rows


def stat_row(arm: Arm, seed: str, subset: str, statistic: str, value: float, lo=math.nan, hi=math.nan,
             n: int | str = "", note: str = "") -> dict:
    return {**arm._asdict(), "seed": seed, "subset": subset, "statistic": statistic, "value": value,
            "ci_low": lo, "ci_high": hi, "n": n, "note": note}


def _with_means(per_seed: list[dict]) -> list[dict]:
    """Append, per (arm, subset, statistic), the mean over seeds with its t-interval (seed = 'mean')."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in per_seed:
        groups[(Arm(*(r[f] for f in Arm._fields)), r["subset"], r["statistic"])].append(r)
    out = list(per_seed)
    for (arm, subset, statistic), rows in groups.items():
        vals = [r["value"] for r in rows if np.isfinite(r["value"])]
        if not vals:
            continue
        mean, lo, hi = stats.t_interval(vals)
        notes = sorted({r["note"] for r in rows if r["note"]})
        out.append(stat_row(arm, "mean", subset, statistic, mean, lo, hi, len(vals), "; ".join(notes)))
    return out


def _job_stats(arm: Arm, j: Job) -> list[dict]:
    """One job's concentration, stability and module-share statistics."""
    g, seed = j.grads, seed_label(j)
    rows = [stat_row(arm, seed, "all", key, value) for key, value in stats.concentration(g.importance).items()]
    for proj in g.modules:
        rows += [stat_row(arm, seed, proj, key, value)
                 for key, value in stats.concentration(g.module_importance[proj]).items()]
    el = g.early_late
    note = (f"first {int(el['n_early'])} vs last {int(el['n_late'])} of {g.n_steps} steps"
            + ("; windows overlap" if el["overlap"] else ""))
    rows.append(stat_row(arm, seed, "all", "early_late_pearson", el["pearson"], note=note))
    rows.append(stat_row(arm, seed, "all", "early_late_spearman", el["spearman"], note=note))
    groups = {"attention": ATTENTION, "ffn": FFN, **{p: (p,) for p in g.modules}}
    rows += [stat_row(arm, seed, "modules", f"share_{name}", value)
             for name, value in stats.group_shares(g.module_totals, groups).items()]
    return rows


def stats_rows(jobs: list[Job]) -> list[dict]:
    """The study's statistics in long form: per seed (seed = 's0', ...), their mean over seeds
    (seed = 'mean', with a t-interval) and pooled rank-shift correlations (seed = 'pooled', with a
    bootstrap interval over seeds). Early/late windows were fixed when the jobs were loaded."""
    arms = arms_of(jobs)
    per_seed: list[dict] = []
    pooled: list[dict] = []
    for arm, arm_jobs in arms.items():
        with_grads = [j for j in arm_jobs if j.grads is not None]
        for j in with_grads:
            per_seed += _job_stats(arm, j)
        if arm.strategy in ("none", "uniform") or not with_grads:
            continue
        ref_arm = uniform_reference(arms, arm)
        if ref_arm is None:
            continue
        ref_note = f"vs uniform/{ref_arm.budget}"
        ref_by_seed = {j.seed: j for j in arms[ref_arm] if j.grads is not None}
        ranks_all, shifts_all = [], []
        for j in with_grads:
            ref = ref_by_seed.get(j.seed)
            if ref is None or ref.grads.num_layers != j.grads.num_layers:
                continue
            seed = seed_label(j)
            s_x, s_u = j.grads.importance, ref.grads.importance
            per_seed.append(stat_row(arm, seed, "all", "amplification_max_min",
                                     stats.max_min_ratio(s_x) / stats.max_min_ratio(s_u), note=ref_note))
            per_seed.append(stat_row(arm, seed, "all", "amplification_cv", stats.cv(s_x) / stats.cv(s_u),
                                     note=ref_note))
            if j.ranks and len(j.ranks) == j.grads.num_layers:
                shift = stats.shares(s_x) - stats.shares(s_u)
                corr = stats.correlation(j.ranks, shift)
                per_seed.append(stat_row(arm, seed, "all", "rank_shift_pearson", corr["pearson"], note=ref_note))
                per_seed.append(stat_row(arm, seed, "all", "rank_shift_spearman", corr["spearman"], note=ref_note))
                ranks_all.append(np.asarray(j.ranks, dtype=float))
                shifts_all.append(shift)
        if ranks_all:
            boot = stats.seed_bootstrap_correlation(ranks_all, shifts_all)
            note = ref_note + ("; bootstrap over seeds" if len(ranks_all) >= 2 else "; one seed: no interval")
            for key in ("pearson", "spearman"):
                pooled.append(stat_row(arm, "pooled", "all", f"rank_shift_{key}", boot[key], boot[f"{key}_low"],
                                       boot[f"{key}_high"], len(ranks_all), note))
    return _with_means(per_seed) + pooled


def _aligned(ref: Job, other: Job) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Question ids both jobs answered, in the reference's order, and each job's correctness on them."""
    mine = dict(zip(other.outcomes.ids, other.outcomes.correct.tolist()))
    theirs = dict(zip(ref.outcomes.ids, ref.outcomes.correct.tolist()))
    ids = [i for i in ref.outcomes.ids if i in mine]
    return ids, np.array([theirs[i] for i in ids], dtype=bool), np.array([mine[i] for i in ids], dtype=bool)


def _pairs(arm_jobs: list[Job], ref_jobs: list[Job], is_base: bool) -> list[tuple[Job, Job]]:
    """Each job with its reference: the same seed; the base model, which is not trained, serves every
    seed with its one evaluation when it has no twin."""
    pairs = []
    for j in arm_jobs:
        if j.outcomes is None:
            continue
        same = [r for r in ref_jobs if r.seed == j.seed]
        ref = same[0] if same else (ref_jobs[0] if is_base and ref_jobs else None)
        if ref is not None:
            pairs.append((j, ref))
    return pairs


def paired_rows(jobs: list[Job]) -> list[dict]:
    """Each strategy vs uniform and vs the base model, on the questions both answered: per seed pair and
    pooled over seed pairs (exact McNemar on the summed discordant counts; bootstrap over questions)."""
    arms = arms_of(jobs)
    rows = []
    for arm, arm_jobs in arms.items():
        refs = []
        if arm.strategy not in ("uniform", "none"):
            refs.append(uniform_reference(arms, arm))
        if arm.strategy != "none":
            refs.append(base_reference(arms, arm))
        for ref_arm in [r for r in refs if r is not None]:
            is_base = ref_arm.strategy == "none"
            label = "none (base model)" if is_base else f"uniform/{ref_arm.budget}"
            pairs = _pairs(arm_jobs, [j for j in arms[ref_arm] if j.outcomes is not None], is_base)
            aligned = [_aligned(ref, j) for j, ref in pairs]
            for (j, ref), (ids, a, b) in zip(pairs, aligned):
                if ids:
                    rows.append(paired_row(arm, label, f"{seed_label(j)} vs {seed_label(ref)}", a[None, :], b[None, :]))
            if len(pairs) < 2:
                continue
            common = set.intersection(*(set(ids) for ids, _, _ in aligned))
            if common:
                keep = [np.array([i in common for i in ids], dtype=bool) for ids, _, _ in aligned]
                rows.append(paired_row(arm, label, f"pooled ({len(pairs)} pairs)",
                                       np.array([a[k] for (_, a, _), k in zip(aligned, keep)]),
                                       np.array([b[k] for (_, _, b), k in zip(aligned, keep)])))
    return rows


def paired_row(arm: Arm, ref_label: str, seeds: str, ref: np.ndarray, other: np.ndarray) -> dict:
    b = int(np.sum(ref & ~other))
    c = int(np.sum(~ref & other))
    mc = stats.mcnemar_counts(b, c, both=int(np.sum(ref & other)), neither=int(np.sum(~ref & ~other)))
    boot = stats.paired_bootstrap_diff(ref.astype(float), other.astype(float))
    return {**arm._asdict(), "reference": ref_label, "seeds": seeds, "n_questions": ref.shape[1],
            "n_pairs": ref.shape[0], "acc_reference": float(ref.mean()), "acc_strategy": float(other.mean()),
            "diff": boot["diff"], "diff_low": boot["low"], "diff_high": boot["high"], "b_reference_only": b,
            "c_strategy_only": c, "mcnemar_p": mc["pvalue"]}


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            # repr keeps every digit of a float, so a reader gets back the number the report computed
            w.writerow({k: repr(float(v)) if isinstance(v, (float, np.floating)) else v for k, v in r.items()})
