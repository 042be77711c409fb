"""The report as markdown (report.md, also printed): the headline (how much amplification remains beyond
the LoRA scaling artefact), the tables, the missing and failed jobs, the figures, the capacity curve
(capacity.py), the rank trajectories (trajectories.py), the landscapes by algorithm, the per-reward
landscapes (rewards.py), the definitions of every statistic (definitions.py), and which W&B panels to open.

    python -m grpo_rank.report SWEEP --no-wandb     # writes SWEEP/report/report.md and prints it
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from pathlib import Path

from grpo_rank.allocation.importance import PROJECTIONS
from grpo_rank.analysis import stats
from grpo_rank.analysis.report import capacity, rewards, trajectories
from grpo_rank.analysis.report.definitions import ADDED_DEFINITIONS, DEFINITIONS, REWARD_DEFINITIONS
from grpo_rank.analysis.report.figures import FIG1, FIG2
from grpo_rank.analysis.report.gradstats import VIEWS, predicted_slope
from grpo_rank.analysis.report.jobs import (
    DEFAULT_SCORING,
    GRADIENT_AWARE,
    Arm,
    Job,
    active,
    arm_name,
    arms_of,
    rank_varies,
)
from grpo_rank.analysis.report.tables import arm_labels as _labels
from grpo_rank.analysis.report.tables import fmt as _fmt
from grpo_rank.analysis.report.tables import interval as _interval
from grpo_rank.analysis.report.tables import md_table
from grpo_rank.objective.algorithms import ALGORITHMS

VIEW_NAMES = {"": "raw", "_normalised": "scaling-normalised", "_full_weight": "full-weight"}


def label_fields(arms) -> list[str]:
    """The arm fields the tables show: model, task, strategy, budget; alpha mode, signal and algorithm
    only where some arm is not at their default, lora.r only where arms differ in it (a sweep that does
    not vary them reads as before)."""
    arms = list(arms)
    return [f for f in Arm._fields
            if f not in Arm._field_defaults or (rank_varies(arms) if f == "r"
                                                else any(getattr(a, f) != Arm._field_defaults[f] for a in arms))]


def _lookup(rows: list[dict]) -> dict[tuple, dict]:
    return {(*(r[f] for f in Arm._fields), r["seed"], r["subset"], r["statistic"]): r for r in rows}


def _cell(index: dict, arm: tuple, statistic: str, subset: str = "all", seed: str = "mean") -> str:
    r = index.get((*arm, seed, subset, statistic))
    if r is None:
        return "n/a"
    ci = _interval(r["ci_low"], r["ci_high"])
    return _fmt(r["value"]) + ("" if ci == "n/a" else f" {ci}")


def _top_label(layer_counts: set[int]) -> str:
    """'k=8 of 28' for the 'top-30% share' header: k beside the statistic, for each L among the arms."""
    return "; ".join(f"k={stats.top_count(n)} of {n}" for n in sorted(layer_counts)) or "no layers"


def _verdict(idx: dict, arm: Arm) -> str:
    """What the rank-invariant views' pooled Pearson intervals say (Definitions: headline)."""
    found = [(VIEW_NAMES[v], idx[key]) for v in ("_normalised", "_full_weight")
             if (key := (*arm, "pooled", "all", f"rank_shift_pearson{v}")) in idx
             and all(math.isfinite(idx[key][b]) for b in ("ci_low", "ci_high"))]
    if not found:
        return "n/a (no scaling-normalised or full-weight correlation with an interval: fewer than 2 seeds)"
    where = ["above 0" if r["ci_low"] > 0 else "below 0" if r["ci_high"] < 0 else "contains 0" for _, r in found]
    said = ", ".join(f"the {name} interval {_interval(r['ci_low'], r['ci_high'])} {w}"
                     for (name, r), w in zip(found, where))
    if set(where) == {"above 0"}:
        return f"a positive rank-shift correlation remains ({said})"
    if set(where) == {"contains 0"}:
        return f"no rank-shift correlation is resolved ({said})"
    if set(where) == {"below 0"}:
        return f"the shift runs against the ranks ({said})"
    return f"the rank-invariant views disagree ({said})"


def headline(arms: dict[Arm, list[Job]], idx: dict) -> list[str]:
    """One bullet per gradient-aware arm: its rank-shift correlation and amplification on the three
    views, its scaling slope at init against the prediction, and what is left beyond scaling."""
    out = ["## Headline: amplification beyond the LoRA scaling artefact", "",
           "Per gradient-aware arm: pooled rank-shift Pearson r [seed bootstrap] and max/min amplification "
           "(mean over seeds [t-interval]) on raw LoRA norms, scaling-normalised norms and the full-weight "
           "signal; the LoRA scaling slope at init against its prediction (Definitions).", ""]
    aware = [a for a in arms if a.strategy in GRADIENT_AWARE and (*a, "pooled", "all", "rank_shift_pearson") in idx]
    if not aware:
        return out + ["n/a: no gradient-aware arm (strategy " + ", ".join(GRADIENT_AWARE) + ") with gradient "
                      "records and a uniform reference of the same alpha mode.", ""]
    for a in aware:
        no_w = not any(j.grads is not None and j.grads.full_weight is not None for j in arms[a])
        fw = " (no full-weight records)" if no_w else ""
        r = [_cell(idx, a, f"rank_shift_pearson{v}", seed="pooled") + (fw if v == "_full_weight" else "")
             for v in VIEWS]
        amp = [_cell(idx, a, f"amplification_max_min{v}") + (fw if v == "_full_weight" else "") for v in VIEWS]
        n = idx[(*a, "pooled", "all", "rank_shift_pearson")]["n"]
        crude = "; with 2-3 seeds these intervals are crude" if 2 <= n <= 3 else ""
        out.append(f"- **{arm_name(a, rank_varies(arms))}** ({n} seed(s)): rank-shift r {r[0]} raw, "
                   f"{r[1]} scaling-normalised, "
                   f"{r[2]} full-weight; max/min amplification {amp[0]} raw, {amp[1]} scaling-normalised, "
                   f"{amp[2]} full-weight; LoRA scaling slope at init {_cell(idx, a, 'scaling_slope_init')} "
                   f"(predicted {predicted_slope(a)} for alpha_mode={a.alpha_mode}). "
                   f"Beyond scaling: {_verdict(idx, a)}{crude}.")
    return out + [""]


def _slope_rows(st: list[dict], fields: list[str]) -> list[list]:
    """The scaling-slope table: per arm, one row per seed and one for the mean over seeds."""
    cells: dict[tuple, dict[str, str]] = {}
    for r in st:
        if r["statistic"].startswith("scaling_slope"):
            arm = Arm(*(r[f] for f in Arm._fields))
            ci = _interval(r["ci_low"], r["ci_high"])
            cells.setdefault((arm, r["seed"]), {})[r["statistic"]] = _fmt(r["value"]) + ("" if ci == "n/a" else f" {ci}")
    arm_order = list(dict.fromkeys(a for a, _ in cells))
    order = sorted(cells, key=lambda k: (arm_order.index(k[0]), k[1] == "mean"))
    return [[*_labels(arm, fields), seed, predicted_slope(arm),
             *[cells[(arm, seed)].get(s, "n/a") for s in ("scaling_slope_init", "scaling_slope",
                                                          "scaling_slope_full_weight_init", "scaling_slope_full_weight")]]
            for arm, seed in order]


WANDB_PANELS = """\
Each job is one W&B run, grouped by `group` (the config without the seed, so a group's runs are the
seeds of one strategy x budget) and tagged `strategy:<name>`, `budget:<name>`, `seed:<n>`. Every
training metric is plotted against `train/global_step` and every profile metric against
`profile/train/global_step` (set as their x-axes), so the runs of a sweep line up step for step. Open:
`grad_share/layer_XX` (per-layer share of the gradient norm per step; the live Figure 1),
`grad_norm/layer_XX` (the raw norms), `grad_share_module/<proj>` (module shares), and
`eval/accuracy` with `eval/ci_low` / `eval/ci_high` in the run summary (Table 1 per run); the tables
`allocation` (rank and S(l) per layer) and `eval/outcomes` (every evaluated question). Grouping
the runs table by the `strategy` config key (`strategy.name`), or by `group`, averages the panels over
seeds. The report run itself (job type `report`) holds these tables and figures, and `rank_shift` (the
points of the rank-vs-shift scatter); `--wandb-report` builds a W&B Report with these panels.
"""


def landscapes(arms: dict[Arm, list[Job]], idx: dict) -> list[str]:
    """The uniform arms of each algorithm side by side, where arms equal but for the algorithm exist for
    more than one: their concentration, stability and module shares (stats_rows' means over seeds)."""
    out = ["## Landscapes by algorithm", ""]
    trained = sorted({a.algorithm for a in arms if a.strategy != "none"},
                     key=lambda name: (list(ALGORITHMS).index(name) if name in ALGORITHMS else len(ALGORITHMS), name))
    if len(trained) < 2:
        return out + [f"One algorithm in this sweep ({', '.join(trained) or 'none'}): no landscapes to compare.", ""]
    groups: dict[Arm, list[Arm]] = defaultdict(list)
    for a in arms:  # arms_of's order: algorithms in ALGORITHMS order within a group
        if a.strategy == "uniform" and (*a, "mean", "all", "gini") in idx:
            groups[a._replace(algorithm="")].append(a)
    rows = [a for same in groups.values() if len(same) > 1 for a in same]
    out += ["The uniform arm of each algorithm, same model, task, budget, alpha mode and lora.r; training-phase "
            "gradients, mean over seeds [95% t-interval] (Definitions).", ""]
    if not rows:
        return out + [f"n/a: algorithms {', '.join(trained)}, but no uniform arms with gradient records that "
                      "differ only in the algorithm.", ""]
    top = f"top-30% share ({_top_label({j.grads.num_layers for a in rows for j in arms[a] if j.grads})})"
    out.append(md_table(["model", "task", "budget", "alpha mode", "r", "algorithm", "max/min", top, "Gini",
                         "early-late r", "attention share", "FFN share"],
                        [[*_labels(a, ["model", "task", "budget", "alpha_mode", "r", "algorithm"]),
                          _cell(idx, a, "max_min_ratio"), _cell(idx, a, "top30_share"), _cell(idx, a, "gini"),
                          _cell(idx, a, "early_late_pearson"), _cell(idx, a, "share_attention", "modules"),
                          _cell(idx, a, "share_ffn", "modules")] for a in rows]))
    return out


def render(jobs: list[Job], notes: list[str], sweeps: list[Path], t1: list[dict], st: list[dict],
           paired: list[dict], early: float, late: float, wandb_line: str,
           capacity_rows: list[dict] | None = None, reward_rows: list[dict] | None = None) -> str:
    """report.md from the tables (tables.py, gradstats.py, capacity.py, rewards.py) and the jobs' statuses.

    The sections added after the golden report (tests/golden/report_tables.json) come with
    `capacity_rows` (capacity.capacity_rows, as build passes them): the capacity curve, the landscapes
    by algorithm, the rank trajectories and their definitions. Without it report.md is the golden's.
    The per-reward landscapes come with `reward_rows` (rewards.reward_rows, [] when no job has records)."""
    added = capacity_rows is not None
    arms = arms_of(jobs)
    idx = _lookup(st)
    n_ok = len(active(jobs))
    fields = label_fields([Arm(*(r[f] for f in Arm._fields)) for r in t1] or list(arms))
    labels = [f.replace("_", " ") for f in fields]
    out = ["# grpo-rank report", ""]
    out.append(f"Sweeps: {', '.join(f'`{s}`' for s in sweeps)}  ")
    out.append(f"Generated {dt.datetime.now().isoformat(timespec='seconds')}; {len(jobs)} jobs found or expected, "
               f"{n_ok} finished and used, {sum(j.status == 'failed' for j in jobs)} failed, "
               f"{sum(j.status not in ('ok', 'failed') for j in jobs)} missing or unfinished.")
    out.append("")
    out += headline(arms, idx)

    out += ["## Table 1: accuracy by strategy and budget", ""]
    # the scorer (eval.scoring) is a column where some job used another than the default, like the arm axes
    scored = any(r["scoring"] not in ("", DEFAULT_SCORING) for r in t1)
    out.append(md_table(
        [*labels, "ranks", "trainable params", "accuracy per seed", *(["scored by"] if scored else []),
         "mean [95% t-interval]", "Wilson 95% per run", "study's normal-approx. ± per run (pts)", "n",
         "ok/failed/missing"],
        [[*_labels(r, fields), r["rank_range"], r["trainable_params"], r["accuracy_per_seed"],
          *([r["scoring"]] if scored else []),
          (_fmt(r["accuracy_mean"], 4) if r["accuracy_mean"] != "" else "n/a") + " "
          + (_interval(r["accuracy_ci95_low"], r["accuracy_ci95_high"]) if r["accuracy_ci95_low"] != "n/a" else "n/a"),
          r["wilson_per_run"], r["normal_half_width_per_run"], r["n_questions"],
          f"{r['n_ok']}/{r['n_failed']}/{r['n_missing']}"] for r in t1]))

    out += ["## Missing and failed jobs", ""]
    bad = [j for j in jobs if j.status != "ok"]
    axes = [f for f in fields if f in Arm._field_defaults]  # alpha mode, signal, algorithm, r where shown above
    out.append(md_table(["sweep", "job", "strategy", "budget", *[f.replace("_", " ") for f in axes], "seed", "status",
                         "detail"],
                        [[str(j.sweep), j.name, j.strategy, j.budget,
                          *["" if (v := getattr(j, "r_uniform" if f == "r" else f)) is None else v for f in axes],
                          "" if j.seed is None else j.seed, j.status,
                          j.detail + (f" (superseded by {j.superseded_by})" if j.superseded_by else "")]
                         for j in bad]))
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]

    out += ["## Figures", "",
            f"Figure 1, per-layer gradient share under uniform ranks (mean over seeds, min-max band): ![fig1]({FIG1})", "",
            f"Figure 2, per-layer gradient share (raw LoRA norms), uniform vs each strategy, allocated ranks as bars: "
            f"![fig2]({FIG2})", ""]
    if added:
        out += capacity.section(capacity_rows, fields) + trajectories.section(arms)

    grad_arms = [a for a in arms if any(j.grads is not None for j in arms[a])]
    top = f"top-30% share ({_top_label({j.grads.num_layers for a in grad_arms for j in arms[a] if j.grads})})"
    out += ["## Layer-importance concentration and stability", "",
            f"Training-phase gradients; mean over seeds [95% t-interval]. Early/late windows: first {early:g} "
            f"and last {late:g} of the steps.", ""]
    out.append(md_table([*labels, "max/min", top, "Gini", "CV", "early-late r", "early-late rho"],
                        [[*_labels(a, fields), _cell(idx, a, "max_min_ratio"), _cell(idx, a, "top30_share"),
                          _cell(idx, a, "gini"), _cell(idx, a, "cv"), _cell(idx, a, "early_late_pearson"),
                          _cell(idx, a, "early_late_spearman")] for a in grad_arms]))

    amp_arms = [a for a in grad_arms if a.strategy not in ("none", "uniform")]
    out += ["## Amplification: each strategy vs uniform", "",
            "On raw LoRA norms (the study's), scaling-normalised norms, and the full-weight signal.", ""]
    out.append(md_table([*labels, "view", "max/min ratio vs uniform", "CV ratio vs uniform",
                         "rank-shift r (pooled) [seed bootstrap]", "rank-shift rho (pooled) [seed bootstrap]",
                         "reference"],
                        [[*_labels(a, fields), VIEW_NAMES[v], _cell(idx, a, f"amplification_max_min{v}"),
                          _cell(idx, a, f"amplification_cv{v}"),
                          _cell(idx, a, f"rank_shift_pearson{v}", seed="pooled"),
                          _cell(idx, a, f"rank_shift_spearman{v}", seed="pooled"),
                          (idx.get((*a, "pooled", "all", f"rank_shift_pearson{v}")) or {}).get("note", "n/a")]
                         for a in amp_arms for v in VIEWS
                         if v == "" or (*a, "mean", "all", f"amplification_max_min{v}") in idx]))

    out += ["## Scaling slope: module gradient norm against rank", "",
            "Log-log slope of each module's gradient norm against its rank, vs the same-seed uniform run: per "
            "seed with its OLS 95% t-interval across layers, and the mean over seeds [t-interval]. Predicted at "
            "init: fixed -1/2, rslora 0, per_rank +1/2 on LoRA norms; 0 on the full-weight signal.", ""]
    out.append(md_table([*labels, "seed", "predicted (LoRA)", "LoRA at init", "LoRA over training",
                         "full-weight at init", "full-weight over training"], _slope_rows(st, fields)))

    out += ["## Module-level gradient shares", ""]
    mods = [m for m in PROJECTIONS if any((*a, "mean", "modules", f"share_{m}") in idx for a in grad_arms)]
    out.append(md_table([*labels, "attention", "FFN", *mods],
                        [[*_labels(a, fields), _cell(idx, a, "share_attention", "modules"),
                          _cell(idx, a, "share_ffn", "modules"),
                          *[_cell(idx, a, f"share_{m}", "modules") for m in mods]] for a in grad_arms]))
    if added:
        out += landscapes(arms, idx)
    if reward_rows is not None:
        out += rewards.section(arms, reward_rows, fields)

    out += ["## Same-shape modules: each projection type alone", "",
            "The statistics above restricted to one projection type, whose shape is the same in every layer, "
            "on scaling-normalised norms (a uniform run's raw norms).", ""]
    out.append(md_table([*labels, "projection", "max/min", top, "Gini"],
                        [[*_labels(a, fields), m, _cell(idx, a, "max_min_ratio", m), _cell(idx, a, "top30_share", m),
                          _cell(idx, a, "gini", m)]
                         for a in grad_arms for m in mods if (*a, "mean", m, "gini") in idx]))

    out += ["## Paired comparisons on the same questions", "",
            "diff = accuracy(strategy) - accuracy(reference), 95% paired bootstrap interval; b = reference "
            "only right, c = strategy only right; exact McNemar p.", ""]
    out.append(md_table([*labels, "reference", "seeds", "n", "acc ref", "acc strategy",
                         "diff [95% bootstrap]", "b", "c", "McNemar p"],
                        [[*_labels(r, fields), r["reference"], r["seeds"], r["n_questions"], _fmt(r["acc_reference"]),
                          _fmt(r["acc_strategy"]), f"{_fmt(r['diff'])} {_interval(r['diff_low'], r['diff_high'])}",
                          r["b_reference_only"], r["c_strategy_only"], f"{r['mcnemar_p']:.4g}"] for r in paired]))

    out += ["## Definitions", "", DEFINITIONS.format(early=f"{early:g}", late=f"{late:g}")
            + (ADDED_DEFINITIONS if added else "") + (REWARD_DEFINITIONS if reward_rows else ""),
            "## Which W&B panels to open", "", WANDB_PANELS, "## W&B", "", wandb_line, "",
            "Files: `table1.csv`, `runs.csv` (every job), `stats.csv` (long form: per seed, `mean` with "
            "t-interval, `pooled` with seed bootstrap), `paired.csv`" + (", `capacity.csv`" if added else "")
            + (f", `{rewards.REWARDS_CSV}`" if reward_rows else "") + ".", ""]
    return "\n".join(out)
