"""The report as markdown (report.md, also printed): the tables, the missing and failed jobs, the
figures, the definitions of every statistic, and which W&B panels to open.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..importance import PROJECTIONS
from .figures import FIG1, FIG2
from .jobs import Arm, Job, active, arms_of
from .tables import fmt as _fmt
from .tables import interval as _interval


def md_table(headers: list[str], rows: list[list]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    # a pipe inside a cell would end it early
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _arm_label(r: dict) -> list:
    return [r[f] for f in Arm._fields]


def _lookup(rows: list[dict]) -> dict[tuple, dict]:
    return {(*_arm_label(r), r["seed"], r["subset"], r["statistic"]): r for r in rows}


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
    """report.md from the tables (tables.py) and the jobs' statuses."""
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
        [*Arm._fields, "ranks", "trainable params", "accuracy per seed",
         "mean [95% t-interval]", "Wilson 95% per run", "n", "ok/failed/missing"],
        [[*_arm_label(r), r["rank_range"], r["trainable_params"],
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
    out.append(md_table([*Arm._fields, "max/min", "top-30% share", "Gini", "CV",
                         "early-late r", "early-late rho"],
                        [[*a, _cell(idx, a, "max_min_ratio"), _cell(idx, a, "top30_share"), _cell(idx, a, "gini"),
                          _cell(idx, a, "cv"), _cell(idx, a, "early_late_pearson"),
                          _cell(idx, a, "early_late_spearman")] for a in grad_arms]))

    amp_arms = [a for a in grad_arms if a.strategy not in ("none", "uniform")]
    out += ["## Amplification: each strategy vs uniform", ""]
    out.append(md_table([*Arm._fields, "max/min ratio vs uniform", "CV ratio vs uniform",
                         "rank-shift r (pooled) [seed bootstrap]", "rank-shift rho (pooled) [seed bootstrap]",
                         "reference"],
                        [[*a, _cell(idx, a, "amplification_max_min"), _cell(idx, a, "amplification_cv"),
                          _cell(idx, a, "rank_shift_pearson", seed="pooled"),
                          _cell(idx, a, "rank_shift_spearman", seed="pooled"),
                          (idx.get((*a, "pooled", "all", "rank_shift_pearson")) or {}).get("note", "n/a")]
                         for a in amp_arms]))

    out += ["## Module-level gradient shares", ""]
    mods = [m for m in PROJECTIONS if any((*a, "mean", "modules", f"share_{m}") in idx for a in grad_arms)]
    out.append(md_table([*Arm._fields, "attention", "FFN", *mods],
                        [[*a, _cell(idx, a, "share_attention", "modules"), _cell(idx, a, "share_ffn", "modules"),
                          *[_cell(idx, a, f"share_{m}", "modules") for m in mods]] for a in grad_arms]))

    out += ["## Same-shape modules: each projection type alone", "",
            "The statistics above restricted to one projection type, whose shape is the same in every layer.", ""]
    out.append(md_table([*Arm._fields, "projection", "max/min", "top-30% share", "Gini"],
                        [[*a, m, _cell(idx, a, "max_min_ratio", m), _cell(idx, a, "top30_share", m),
                          _cell(idx, a, "gini", m)]
                         for a in grad_arms for m in mods if (*a, "mean", m, "gini") in idx]))

    out += ["## Paired comparisons on the same questions", "",
            "diff = accuracy(strategy) - accuracy(reference), 95% paired bootstrap interval; b = reference "
            "only right, c = strategy only right; exact McNemar p.", ""]
    out.append(md_table([*Arm._fields, "reference", "seeds", "n", "acc ref", "acc strategy",
                         "diff [95% bootstrap]", "b", "c", "McNemar p"],
                        [[*_arm_label(r), r["reference"], r["seeds"], r["n_questions"], _fmt(r["acc_reference"]),
                          _fmt(r["acc_strategy"]), f"{_fmt(r['diff'])} {_interval(r['diff_low'], r['diff_high'])}",
                          r["b_reference_only"], r["c_strategy_only"], f"{r['mcnemar_p']:.4g}"] for r in paired]))

    out += ["## Definitions", "", DEFINITIONS.format(early=f"{early:g}", late=f"{late:g}"),
            "## Which W&B panels to open", "", WANDB_PANELS, "## W&B", "", wandb_line, "",
            "Files: `table1.csv`, `runs.csv` (every job), `stats.csv` (long form: per seed, `mean` with "
            "t-interval, `pooled` with seed bootstrap), `paired.csv`.", ""]
    return "\n".join(out)
