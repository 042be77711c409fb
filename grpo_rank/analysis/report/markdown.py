"""The report as markdown (report.md, also printed): the headline (how much amplification remains beyond
the LoRA scaling artefact), the tables, the missing and failed jobs, the figures, the capacity curve
(capacity.py), the rank trajectories (trajectories.py), the rank shift against an independent uniform
run with its no-effect null, the landscapes by algorithm, the per-reward landscapes (rewards.py), the
paired comparisons, the definitions of every statistic (definitions.py), and which W&B panels to open.

    python -m grpo_rank.report SWEEP --no-wandb     # writes SWEEP/report/report.md and prints it
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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
    varying,
)
from grpo_rank.analysis.report.sections import (
    VIEW_NAMES,
    View,
    amplification,
    cell,
    concentration,
    label_fields,
    lookup,
    module_shares,
    same_shape,
    scaling_slopes,
    top_label,
)
from grpo_rank.analysis.report.tables import ONE_EVALUATION, md_table
from grpo_rank.analysis.report.tables import arm_labels as _labels
from grpo_rank.analysis.report.tables import fmt as _fmt
from grpo_rank.analysis.report.tables import interval as _interval
from grpo_rank.objective.algorithms import ALGORITHMS


def _verdict(idx: dict, arm: Arm) -> str:
    """What the rank-invariant views' independent rank-shift r say against their no-effect null
    (Definitions: headline)."""
    found = []
    for v in ("_normalised", "_full_weight"):
        name = f"rank_shift_pearson{v}_independent"
        obs, null, p = (idx.get((*arm, seed, "all", stat)) for seed, stat in
                        (("pooled", name), ("null", name), ("pooled", f"{name}_null_p")))
        if obs and null and p and all(math.isfinite(x) for x in (obs["value"], null["ci_low"], null["ci_high"])):
            found.append((VIEW_NAMES[v], obs["value"], null, p["value"]))
    if not found:
        return ("n/a (no rank-invariant view has an independent rank-shift r with a no-effect null: it needs "
                "2 or more uniform runs)")
    where = ["above" if r > null["ci_high"] else "below" if r < null["ci_low"] else "within" for _, r, null, _ in found]
    said = ", ".join(f"{name} r {_fmt(r)} against its null {_fmt(null['value'])} "
                     f"{_interval(null['ci_low'], null['ci_high'])}, p = {p:.3g}" for name, r, null, p in found)
    if set(where) == {"above"}:
        return f"a positive rank-shift correlation remains, above its no-effect null ({said})"
    if set(where) == {"within"}:
        return f"no rank-shift correlation is resolved: within its no-effect null ({said})"
    if set(where) == {"below"}:
        return f"the shift runs against the ranks, below its no-effect null ({said})"
    return f"the rank-invariant views disagree ({said})"


def headline(arms: dict[Arm, list[Job]], idx: dict) -> list[str]:
    """One bullet per gradient-aware arm: its rank-shift correlation and amplification on the three
    views, its scaling slope at init against the prediction, and what is left beyond scaling."""
    out = ["## Headline: amplification beyond the LoRA scaling artefact", "",
           "Per gradient-aware arm: pooled rank-shift Pearson r (the study's definition, against the same-seed "
           "uniform run) [seed bootstrap] and max/min amplification (mean over seeds [t-interval]) on raw LoRA "
           "norms, scaling-normalised norms and the full-weight signal; the LoRA scaling slope at init against "
           "its prediction; beyond scaling, the rank shift against an independent uniform run and its "
           "no-effect null (Definitions).", ""]
    aware = [a for a in arms if a.strategy in GRADIENT_AWARE and (*a, "pooled", "all", "rank_shift_pearson") in idx]
    if not aware:
        return out + ["n/a: no gradient-aware arm (strategy " + ", ".join(GRADIENT_AWARE) + ") with gradient "
                      "records and a uniform reference of the same alpha mode.", ""]
    for a in aware:
        no_w = not any(j.grads is not None and j.grads.full_weight is not None for j in arms[a])
        fw = " (no full-weight records)" if no_w else ""
        r = [cell(idx, a, f"rank_shift_pearson{v}", seed="pooled") + (fw if v == "_full_weight" else "")
             for v in VIEWS]
        amp = [cell(idx, a, f"amplification_max_min{v}") + (fw if v == "_full_weight" else "") for v in VIEWS]
        n = idx[(*a, "pooled", "all", "rank_shift_pearson")]["n"]
        crude = "; with 2-3 seeds these intervals are crude" if 2 <= n <= 3 else ""
        out.append(f"- **{arm_name(a, varying(arms))}** ({n} seed(s)): rank-shift r (the study's "
                   f"definition) {r[0]} raw, "
                   f"{r[1]} scaling-normalised, "
                   f"{r[2]} full-weight; max/min amplification {amp[0]} raw, {amp[1]} scaling-normalised, "
                   f"{amp[2]} full-weight; LoRA scaling slope at init {cell(idx, a, 'scaling_slope_init')} "
                   f"(predicted {predicted_slope(a)} for alpha_mode={a.alpha_mode}). "
                   f"Beyond scaling: {_verdict(idx, a)}{crude}.")
    return out + [""]


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
    top = f"top-30% share ({top_label({j.grads.num_layers for a in rows for j in arms[a] if j.grads})})"
    out.append(md_table(["model", "task", "budget", "alpha mode", "r", "algorithm", "max/min", top, "Gini",
                         "early-late r", "attention share", "FFN share"],
                        [[*_labels(a, ["model", "task", "budget", "alpha_mode", "r", "algorithm"]),
                          cell(idx, a, "max_min_ratio"), cell(idx, a, "top30_share"), cell(idx, a, "gini"),
                          cell(idx, a, "early_late_pearson"), cell(idx, a, "share_attention", "modules"),
                          cell(idx, a, "share_ffn", "modules")] for a in rows]))
    return out


def table1_section(t1: list[dict], fields: list[str]) -> list[str]:
    """Table 1: accuracy per arm under the job's scoring with its interval, both scorings and the
    well-formed fraction beside it, the per-run intervals, and the jobs found."""
    labels = [f.replace("_", " ") for f in fields]

    def interval_cell(r: dict) -> str:
        mean = _fmt(r["accuracy_mean"], 4) if r["accuracy_mean"] != "" else "n/a"
        if r["accuracy_ci95_low"] == "n/a":
            return f"{mean} n/a"
        one = " (Wilson, one evaluation)" if r["accuracy_interval"] == ONE_EVALUATION else ""
        return f"{mean} {_interval(r['accuracy_ci95_low'], r['accuracy_ci95_high'])}{one}"

    out = ["## Table 1: accuracy by strategy and budget", "",
           "Accuracy as each job's eval.scoring counts it: mean over seeds [95% t-interval]; for a deterministic arm "
           "(the base model, greedy decoding) its one evaluation [Wilson]. Beside it the accuracy under scoring "
           "`tagged` and `any` and the fraction of well-formed replies, means over the same evaluations "
           "(Definitions).", ""]
    # the scorer (eval.scoring) is a column where some job used another than the default, like the arm axes
    scored = any(r["scoring"] not in ("", DEFAULT_SCORING) for r in t1)
    out.append(md_table(
        [*labels, "ranks", "trainable params", "accuracy per seed", *(["scored by"] if scored else []),
         "mean [95% interval]",
         "tagged / any / well-formed", "Wilson 95% per run", "study's normal-approx. ± per run (pts)", "n",
         "ok/failed/missing"],
        [[*_labels(r, fields), r["rank_range"], r["trainable_params"], r["accuracy_per_seed"],
          *([r["scoring"]] if scored else []), interval_cell(r),
          f"{_fmt(r['accuracy_tagged_mean'])} / {_fmt(r['accuracy_any_mean'])} / {_fmt(r['well_formed_mean'])}",
          r["wilson_per_run"], r["normal_half_width_per_run"], r["n_questions"],
          f"{r['n_ok']}/{r['n_failed']}/{r['n_missing']}"] for r in t1]))
    return out


def _null_cell(idx: dict, arm: Arm, statistic: str) -> tuple[str, str]:
    """(the no-effect null as 'mean [2.5%, 97.5%]', the observed value's p against it), or n/a."""
    null = idx.get((*arm, "null", "all", statistic))
    p = idx.get((*arm, "pooled", "all", f"{statistic}_null_p"))
    # no null, or one of constant draws: uniform runs whose maps do not differ have no noise to permute
    if null is None or p is None or not math.isfinite(null["value"]):
        return "n/a", "n/a"
    return f"{_fmt(null['value'])} {_interval(null['ci_low'], null['ci_high'])}", f"{p['value']:.3g}"


def rank_shift_section(arms: dict[Arm, list[Job]], idx: dict, fields: list[str]) -> list[str]:
    """Per gradient-aware arm and view: the study's same-run rank-shift r and the r against an
    independent uniform run, each beside its no-effect null (gradstats.independent_rows)."""
    labels = [f.replace("_", " ") for f in fields]
    out = ["## Rank shift against an independent uniform run, and the no-effect null", "",
           "The study's definition measures the shift against the uniform run the ranks were allocated from, "
           "so that even with no effect it is expected below 0 (regression to the mean). Per gradient-aware arm: "
           "pooled Pearson r [seed bootstrap] against the same-seed uniform run (the study's definition) and "
           "against uniform runs independent of the rank source, each beside its null under no effect (mean "
           "[central 95%] of its draws) and the two-sided p of the observed r against it (Definitions).", ""]
    rows = []
    for a in arms:
        if a.strategy not in GRADIENT_AWARE:
            continue
        for v in VIEWS:
            name = f"rank_shift_pearson{v}"
            if (*a, "pooled", "all", f"{name}_independent") not in idx:
                continue
            same_null, same_p = _null_cell(idx, a, name)
            ind_null, ind_p = _null_cell(idx, a, f"{name}_independent")
            rows.append([*_labels(a, fields), VIEW_NAMES[v], cell(idx, a, name, seed="pooled"), same_null, same_p,
                         cell(idx, a, f"{name}_independent", seed="pooled"), ind_null, ind_p,
                         idx[(*a, "pooled", "all", f"{name}_independent")]["note"] or "n/a"])
    if not rows:
        return out + ["n/a: no gradient-aware arm with a uniform run independent of its rank source (it needs "
                      "2 or more uniform seeds, or a same-seed uniform run that is not the rank source).", ""]
    out.append(md_table([*labels, "view", "r (the study's definition)", "its no-effect null", "p",
                         "r vs independent uniform", "its no-effect null", "p", "independent reference"], rows))
    return out


PAIRED_INTRO = (
    "diff = accuracy(strategy) - accuracy(reference). Per seed pair: 95% question bootstrap, b = reference "
    "only right, c = strategy only right, exact McNemar p. Across seed pairs (the same questions, so never "
    "pooled into one McNemar table): 95% two-level bootstrap (seeds, then questions) and the seed-level "
    "95% t-interval, and the sign-flip permutation p over questions of the seed-averaged differences. "
    "MDE: the smallest difference the row's test detects with 80% power at alpha 0.05 (Definitions).")


def paired_section(paired: list[dict], fields: list[str]) -> list[str]:
    """The paired comparisons: per seed pair and across the seed pairs, each with its test and its
    minimum detectable difference."""
    out = ["## Paired comparisons on the same questions", "", PAIRED_INTRO, ""]
    labels = [f.replace("_", " ") for f in fields]
    out.append(md_table([*labels, "reference", "seeds", "n", "acc ref", "acc strategy", "diff [95% bootstrap]",
                         "seed t-interval", "b", "c", "test", "p", "MDE (80%)"],
                        [[*_labels(r, fields), r["reference"], r["seeds"], r["n_questions"], _fmt(r["acc_reference"]),
                          _fmt(r["acc_strategy"]), f"{_fmt(r['diff'])} {_interval(r['diff_low'], r['diff_high'])}",
                          _interval(r["seed_t_low"], r["seed_t_high"]), r["b_reference_only"], r["c_strategy_only"],
                          r["test"], f"{r['p_value']:.4g}", _fmt(r["mde80"])] for r in paired]))
    return out


@dataclass
class ReportData:
    """What report.md is written from: the jobs, what loading them noted, and every table computed."""

    jobs: list[Job]
    notes: list[str]
    sweeps: list[Path]
    t1: list[dict]
    st: list[dict]
    paired: list[dict]
    capacity: list[dict]  # capacity.capacity_rows
    rewards: list[dict]  # rewards.reward_rows, [] when no job recorded per-reward gradients
    early: float = 0.25
    late: float = 0.25
    wandb_line: str = "W&B: skipped (--no-wandb)."


def render(data: ReportData) -> str:
    """report.md: its sections in order, each a function of the data or of the View on it."""
    v = View(arms_of(data.jobs), lookup(data.st),
             label_fields([Arm(*(r[f] for f in Arm._fields)) for r in data.t1] or list(arms_of(data.jobs))),
             data.st, data.early, data.late)
    out = header(data)
    out += headline(v.arms, v.idx)
    out += table1_section(data.t1, v.fields)
    out += missing(data, v.fields)
    out += figures(data, v)
    out += concentration(v) + amplification(v)
    out += rank_shift_section(v.arms, v.idx, v.fields)
    out += scaling_slopes(v) + module_shares(v)
    out += landscapes(v.arms, v.idx)
    out += rewards.section(v.arms, data.rewards, v.fields)
    out += same_shape(v)
    out += paired_section(data.paired, v.fields)
    out += closing(data)
    return "\n".join(out)


def header(data: ReportData) -> list[str]:
    jobs = data.jobs
    return ["# grpo-rank report", "",
            f"Sweeps: {', '.join(f'`{s}`' for s in data.sweeps)}  ",
            f"Generated {dt.datetime.now().isoformat(timespec='seconds')}; {len(jobs)} jobs found or expected, "
            f"{len(active(jobs))} finished and used, {sum(j.status == 'failed' for j in jobs)} failed, "
            f"{sum(j.status not in ('ok', 'failed') for j in jobs)} missing or unfinished.", ""]


def missing(data: ReportData, fields: list[str]) -> list[str]:
    """The jobs that are not finished, with why, and what loading the records noted."""
    out = ["## Missing and failed jobs", ""]
    axes = [f for f in fields if f in Arm._field_defaults]  # alpha mode, signal, algorithm, r where shown above
    out.append(md_table(["sweep", "job", "strategy", "budget", *[f.replace("_", " ") for f in axes], "seed", "status",
                         "detail"],
                        [[str(j.sweep), j.name, j.strategy, j.budget,
                          *["" if (x := getattr(j, "r_uniform" if f == "r" else f)) is None else x for f in axes],
                          "" if j.seed is None else j.seed, j.status,
                          j.detail + (f" (superseded by {j.superseded_by})" if j.superseded_by else "")]
                         for j in data.jobs if j.status != "ok"]))
    if data.notes:
        out += ["Notes:", ""] + [f"- {n}" for n in data.notes] + [""]
    return out


def figures(data: ReportData, v: View) -> list[str]:
    return (["## Figures", "",
             f"Figure 1, per-layer gradient share under uniform ranks (mean over seeds, min-max band): ![fig1]({FIG1})",
             "",
             f"Figure 2, per-layer gradient share (raw LoRA norms), uniform vs each strategy, allocated ranks as bars: "
             f"![fig2]({FIG2})", ""]
            + capacity.section(data.capacity, v.fields) + trajectories.section(v.arms))


def closing(data: ReportData) -> list[str]:
    """The definitions of every number above, where to look in W&B, and the files written."""
    return ["## Definitions", "", DEFINITIONS.format(early=f"{data.early:g}", late=f"{data.late:g}")
            + ADDED_DEFINITIONS + (REWARD_DEFINITIONS if data.rewards else ""),
            "## Which W&B panels to open", "", WANDB_PANELS, "## W&B", "", data.wandb_line, "",
            "Files: `table1.csv`, `runs.csv` (every job), `stats.csv` (long form: per seed, `mean` with "
            "t-interval, `pooled` with seed bootstrap), `paired.csv`, `capacity.csv`"
            + (f", `{rewards.REWARDS_CSV}`" if data.rewards else "") + ".", ""]
