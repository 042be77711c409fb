"""The report's tables as lists of rows (dicts): Table 1, every job, and the paired tests; computed from
the jobs' reduced arrays (discover.load), written as CSV. The statistics in long form are gradstats.py's.

Every statistic is a function of grpo_rank/analysis/stats.py or stats_design.py; the markdown's
"Definitions" section says which.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from grpo_rank.analysis import stats, stats_design
from grpo_rank.analysis.report.jobs import (
    COUNTS,
    Arm,
    Job,
    arm_name,
    arm_sort_key,
    arms_of,
    base_reference,
    deterministic,
    evaluations,
    scoring_of,
    seed_label,
    shorter_reference,
    uniform_reference,
    varying,
)

PAIRED_COLUMNS = [*Arm._fields, "reference", "seeds", "n_questions", "n_pairs", "acc_reference", "acc_strategy",
                  "diff", "diff_low", "diff_high", "b_reference_only", "c_strategy_only", "mcnemar_p", "interval",
                  "seed_t_low", "seed_t_high", "test", "p_value", "discordance", "mde80"]
ONE_EVALUATION = "Wilson (one evaluation: greedy decoding, the same under every seed)"


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


def md_table(headers: list[str], rows: list[list]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    # a pipe inside a cell would end it early
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def arm_labels(arm, fields: list[str]) -> list:
    """An arm's (an Arm's or a row's) values of `fields` as a table shows them: the base model has no
    algorithm, lora.r or length of its own ("-"), and a missing lora.r or length is "-"."""
    get = (lambda f: arm[f]) if isinstance(arm, dict) else (lambda f: getattr(arm, f))
    base = get("strategy") == "none"
    return ["-" if (f in COUNTS and get(f) in (None, "")) or (base and f in ("algorithm", *COUNTS)) else get(f)
            for f in fields]


def format_scores(job: Job) -> tuple[tuple[float, float, float], str]:
    """(accuracy under scoring tagged, under scoring any, fraction of well-formed replies) of one job and
    where they come from: its record (EvalSummary, written since they were recorded), else its
    eval_outcomes.jsonl (replies judged again; rows without replies give no well-formed fraction),
    else NaN."""
    ev = job.result.eval if job.result else None
    if ev is not None and ev.accuracy_tagged is not None:
        return (ev.accuracy_tagged, ev.accuracy_any, ev.well_formed_fraction), "record"
    o = job.outcomes
    if o is not None and o.tagged_correct is not None:
        formed = float(o.well_formed.mean()) if o.well_formed is not None else math.nan
        return (float(o.tagged_correct.mean()), float(o.any_correct.mean()), formed), "eval_outcomes.jsonl"
    return (math.nan, math.nan, math.nan), "n/a"


def _format_columns(evals: list[tuple[Job, object]]) -> dict:
    """Table 1's format columns: the means over the arm's evaluations, per seed, and their source."""
    scored = [(j, *format_scores(j)) for j, _ in evals]
    means = [float(np.mean([v[i] for _, v, _ in scored])) if scored else math.nan for i in range(3)]
    return {"accuracy_tagged_mean": means[0], "accuracy_any_mean": means[1], "well_formed_mean": means[2],
            "format_per_seed": "; ".join(f"{seed_label(j)} {fmt(v[0])}/{fmt(v[1])}/{fmt(v[2])}" for j, v, _ in scored),
            "format_from": "; ".join(sorted({src for _, _, src in scored}))}


def table1_rows(jobs: list[Job]) -> list[dict]:
    """Table 1: one row per arm, also for arms with no finished job. A deterministic arm (the base model
    under greedy decoding) is one evaluation with its Wilson interval, however many seeds repeat it."""
    arms = arms_of(jobs)
    all_arms: dict[Arm, float | None] = {arm: js[0].budget_fraction for arm, js in arms.items()}
    for job in jobs:
        if job.superseded_by is None and "?" not in (job.strategy, job.budget) and job.arm not in all_arms:
            all_arms[job.arm] = job.budget_fraction
    rows = []
    for arm in sorted(all_arms, key=lambda a: arm_sort_key(a, all_arms[a])):
        done = arms.get(arm, [])
        mine = [j for j in jobs if j.arm == arm and j.superseded_by is None]
        evals = [(j, j.result.eval) for j in evaluations(arm, done)]
        once = deterministic(arm, done) and len(evals) == 1
        ranks = [r for j in done for r in (j.ranks or [])]
        accs = [ev.accuracy for _, ev in evals]
        mean, lo, hi = stats.t_interval(accs, bounds=(0, 1)) if accs else (math.nan, math.nan, math.nan)
        if once:
            lo, hi = evals[0][1].ci_low, evals[0][1].ci_high
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
            # which eval.scoring produced them; two in one arm are not comparable, and the cell shows both
            "scoring": "; ".join(sorted({scoring_of(j) for j, _ in evals})),
            "accuracy_mean": mean if accs else "",
            "accuracy_ci95_low": lo if len(accs) >= 2 or once else "n/a",
            "accuracy_ci95_high": hi if len(accs) >= 2 or once else "n/a",
            "accuracy_interval": (ONE_EVALUATION if once else
                                  "t-interval across seeds" if len(accs) >= 2 else "n/a (fewer than 2 seeds)"),
            "wilson_per_run": "; ".join(f"{seed_label(j)} {interval(ev.ci_low, ev.ci_high)}" for j, ev in evals),
            # the study's "Wilson" +- values are this normal approximation, in accuracy points
            "normal_half_width_per_run": "; ".join(
                f"{seed_label(j)} ±{fmt(100 * stats.normal_half_width(ev.accuracy, ev.n), 2)}" for j, ev in evals),
            "n_questions": "; ".join(str(n) for n in sorted({ev.n for _, ev in evals})),
            "parse_failure_rate_mean": float(np.mean([ev.parse_failure_rate for _, ev in evals])) if evals else "",
            "n_ok": len(done),
            "n_failed": sum(j.status == "failed" for j in mine),
            "n_missing": sum(j.status not in ("ok", "failed") for j in mine),
            **_format_columns(evals),
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
            "budget": j.budget, "alpha_mode": j.alpha_mode, "signal": j.signal, "algorithm": j.algorithm,
            "r": "" if j.r_uniform is None else j.r_uniform, "steps": "" if j.steps is None else j.steps,
            "seed": "" if j.seed is None else j.seed,
            "accuracy": ev.accuracy if ev else "", "scoring": scoring_of(j), "correct": ev.correct if ev else "",
            "n": ev.n if ev else "",
            "wilson_low": ev.ci_low if ev else "", "wilson_high": ev.ci_high if ev else "",
            "normal_half_width": stats.normal_half_width(ev.accuracy, ev.n) if ev else "",
            "parse_failure_rate": ev.parse_failure_rate if ev else "",
            "rank_min": min(ranks) if ranks else "", "rank_max": max(ranks) if ranks else "",
            "rank_total": sum(ranks) if ranks else "", "trainable_params": "" if j.params is None else j.params,
            "nonzero_spread_fraction": train.nonzero_spread_fraction if train else "",
            "grad_steps": j.grads.n_steps if j.grads is not None else "",
        })
    return rows


def _aligned(ref: Job, other: Job) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Question ids both jobs answered, in the reference's order, and each job's correctness on them."""
    mine = dict(zip(other.outcomes.ids, other.outcomes.correct.tolist()))
    theirs = dict(zip(ref.outcomes.ids, ref.outcomes.correct.tolist()))
    ids = [i for i in ref.outcomes.ids if i in mine]
    return ids, np.array([theirs[i] for i in ids], dtype=bool), np.array([mine[i] for i in ids], dtype=bool)


def _pairs(arm_jobs: list[Job], ref_arm: Arm, ref_jobs: list[Job]) -> list[tuple[Job, Job]]:
    """Each job with its reference: the same seed; a deterministic reference (the base model) is its one
    evaluation, the reference of every seed."""
    once = deterministic(ref_arm, ref_jobs)
    ref_jobs = [r for r in (evaluations(ref_arm, ref_jobs) if once else ref_jobs) if r.outcomes is not None]
    pairs = []
    for j in arm_jobs:
        if j.outcomes is None:
            continue
        same = [r for r in ref_jobs if r.seed == j.seed]
        ref = ref_jobs[0] if once and ref_jobs else (same[0] if same else None)
        if ref is not None:
            pairs.append((j, ref))
    return pairs


def paired_rows(jobs: list[Job]) -> list[dict]:
    """Each strategy vs uniform and vs the base model, and each arm vs itself trained for fewer steps where
    the arms differ in grpo.steps (does accuracy still rise?), on the questions both answered: per seed pair
    (exact McNemar, question bootstrap) and, with two or more pairs, across them on the questions every
    pair answered (stats_design.paired_design: sign-flip test over questions, two-level bootstrap, seed
    t-interval). The seed pairs are never pooled into one McNemar table: they share their questions."""
    arms = arms_of(jobs)
    show = varying(arms) & {"steps"}  # a reference has the arm's lora.r; its length may differ
    rows = []
    for arm, arm_jobs in arms.items():
        refs = []
        if arm.strategy not in ("uniform", "none"):
            refs.append(uniform_reference(arms, arm))
        if arm.strategy != "none":
            refs += [base_reference(arms, arm), shorter_reference(arms, arm)]
        for ref_arm in [r for r in refs if r is not None]:
            label = "none (base model)" if ref_arm.strategy == "none" else arm_name(ref_arm, show)
            pairs = _pairs(arm_jobs, ref_arm, arms[ref_arm])
            aligned = [_aligned(ref, j) for j, ref in pairs]
            for (j, ref), (ids, a, b) in zip(pairs, aligned):
                if ids:
                    rows.append(paired_row(arm, label, f"{seed_label(j)} vs {seed_label(ref)}", a, b))
            if len(pairs) < 2:
                continue
            common = set.intersection(*(set(ids) for ids, _, _ in aligned))
            if common:
                keep = [np.array([i in common for i in ids], dtype=bool) for ids, _, _ in aligned]
                rows.append(across_row(arm, label, np.array([a[k] for (_, a, _), k in zip(aligned, keep)]),
                                       np.array([b[k] for (_, _, b), k in zip(aligned, keep)])))
    return rows


def paired_row(arm: Arm, ref_label: str, seeds: str, ref: np.ndarray, other: np.ndarray) -> dict:
    """One seed pair: exact McNemar, the question bootstrap of the difference, its power."""
    b = int(np.sum(ref & ~other))
    c = int(np.sum(~ref & other))
    mc = stats.mcnemar_counts(b, c, both=int(np.sum(ref & other)), neither=int(np.sum(~ref & ~other)))
    boot = stats.paired_bootstrap_diff(ref.astype(float), other.astype(float))
    n = ref.size
    return {**arm._asdict(), "reference": ref_label, "seeds": seeds, "n_questions": n, "n_pairs": 1,
            "acc_reference": float(ref.mean()), "acc_strategy": float(other.mean()), "diff": boot["diff"],
            "diff_low": boot["low"], "diff_high": boot["high"], "b_reference_only": b, "c_strategy_only": c,
            "mcnemar_p": mc["pvalue"], "interval": "question bootstrap", "seed_t_low": math.nan,
            "seed_t_high": math.nan, "test": "exact McNemar", "p_value": mc["pvalue"],
            "discordance": (b + c) / n, "mde80": stats_design.min_detectable_difference(n, (b + c) / n)}


def across_row(arm: Arm, ref_label: str, ref: np.ndarray, other: np.ndarray) -> dict:
    """The seed pairs together: (pairs x questions) outcomes on the questions all of them answered."""
    d = stats_design.paired_design(ref, other)
    return {**arm._asdict(), "reference": ref_label, "seeds": f"across {ref.shape[0]} seed pairs",
            "n_questions": ref.shape[1], "n_pairs": ref.shape[0], "acc_reference": float(ref.mean()),
            "acc_strategy": float(other.mean()), "diff": d["diff"], "diff_low": d["boot_low"],
            "diff_high": d["boot_high"], "b_reference_only": "", "c_strategy_only": "", "mcnemar_p": "",
            "interval": "two-level bootstrap (seeds, then questions)", "seed_t_low": d["t_low"],
            "seed_t_high": d["t_high"], "test": f"sign-flip permutation over questions ({d['method']})",
            "p_value": d["pvalue"], "discordance": d["discordance"], "mde80": d["mde80"]}


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            # repr keeps every digit of a float, so a reader gets back the number the report computed
            w.writerow({k: repr(float(v)) if isinstance(v, (float, np.floating)) else v for k, v in r.items()})
