"""The gradient-statistics sections of report.md, one function per section, each reading a `View`
(the arms, the statistics by key, the arm fields shown), and the cell helpers every section shares.
markdown.py puts them in order."""

from __future__ import annotations

from dataclasses import dataclass

from grpo_rank.allocation.importance import PROJECTIONS
from grpo_rank.analysis import stats
from grpo_rank.analysis.report.gradstats import VIEWS, predicted_slope
from grpo_rank.analysis.report.jobs import COUNTS, Arm, Job, varying
from grpo_rank.analysis.report.tables import arm_labels as _labels
from grpo_rank.analysis.report.tables import fmt as _fmt
from grpo_rank.analysis.report.tables import interval as _interval
from grpo_rank.analysis.report.tables import md_table

VIEW_NAMES = {"": "raw", "_normalised": "scaling-normalised", "_full_weight": "full-weight"}


def label_fields(arms) -> list[str]:
    """The arm fields the tables show: model, task, strategy, budget; alpha mode, signal and algorithm
    only where some arm is not at their default, lora.r and grpo.steps only where arms differ in them (a
    sweep that does not vary them reads as before)."""
    arms = list(arms)
    shown = varying(arms)
    return [f for f in Arm._fields
            if (f in shown if f in COUNTS
                else f not in Arm._field_defaults or any(getattr(a, f) != Arm._field_defaults[f] for a in arms))]


def lookup(rows: list[dict]) -> dict[tuple, dict]:
    return {(*(r[f] for f in Arm._fields), r["seed"], r["subset"], r["statistic"]): r for r in rows}


def cell(index: dict, arm: tuple, statistic: str, subset: str = "all", seed: str = "mean") -> str:
    r = index.get((*arm, seed, subset, statistic))
    if r is None:
        return "n/a"
    ci = _interval(r["ci_low"], r["ci_high"])
    return _fmt(r["value"]) + ("" if ci == "n/a" else f" {ci}")


def top_label(layer_counts: set[int]) -> str:
    """'k=8 of 28' for the 'top-30% share' header: k beside the statistic, for each L among the arms."""
    return "; ".join(f"k={stats.top_count(n)} of {n}" for n in sorted(layer_counts)) or "no layers"


def slope_rows(st: list[dict], fields: list[str]) -> list[list]:
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


@dataclass
class View:
    """What the sections read: the arms and their jobs, stats.csv's rows by key (lookup), the arm fields
    the tables show (label_fields), and the early/late windows."""

    arms: dict[Arm, list[Job]]
    idx: dict[tuple, dict]
    fields: list[str]
    st: list[dict]
    early: float
    late: float

    @property
    def labels(self) -> list[str]:
        return [f.replace("_", " ") for f in self.fields]

    @property
    def grad_arms(self) -> list[Arm]:
        return [a for a in self.arms if any(j.grads is not None for j in self.arms[a])]

    @property
    def modules(self) -> list[str]:
        return [m for m in PROJECTIONS if any((*a, "mean", "modules", f"share_{m}") in self.idx for a in self.grad_arms)]

    @property
    def top(self) -> str:
        counts = {j.grads.num_layers for a in self.grad_arms for j in self.arms[a] if j.grads}
        return f"top-30% share ({top_label(counts)})"


def concentration(v: View) -> list[str]:
    out = ["## Layer-importance concentration and stability", "",
           f"Training-phase gradients; mean over seeds [95% t-interval]. Early/late windows: first {v.early:g} "
           f"and last {v.late:g} of the steps.", ""]
    out.append(md_table([*v.labels, "max/min", v.top, "Gini", "CV", "early-late r", "early-late rho"],
                        [[*_labels(a, v.fields), cell(v.idx, a, "max_min_ratio"), cell(v.idx, a, "top30_share"),
                          cell(v.idx, a, "gini"), cell(v.idx, a, "cv"), cell(v.idx, a, "early_late_pearson"),
                          cell(v.idx, a, "early_late_spearman")] for a in v.grad_arms]))
    return out


def amplification(v: View) -> list[str]:
    amp_arms = [a for a in v.grad_arms if a.strategy not in ("none", "uniform")]
    out = ["## Amplification: each strategy vs uniform", "",
           "On raw LoRA norms (the study's), scaling-normalised norms, and the full-weight signal.", ""]
    out.append(md_table([*v.labels, "view", "max/min ratio vs uniform", "CV ratio vs uniform",
                         "rank-shift r (pooled; the study's definition) [seed bootstrap]",
                         "rank-shift rho (pooled; the study's definition) [seed bootstrap]",
                         "reference"],
                        [[*_labels(a, v.fields), VIEW_NAMES[w], cell(v.idx, a, f"amplification_max_min{w}"),
                          cell(v.idx, a, f"amplification_cv{w}"),
                          cell(v.idx, a, f"rank_shift_pearson{w}", seed="pooled"),
                          cell(v.idx, a, f"rank_shift_spearman{w}", seed="pooled"),
                          (v.idx.get((*a, "pooled", "all", f"rank_shift_pearson{w}")) or {}).get("note", "n/a")]
                         for a in amp_arms for w in VIEWS
                         if w == "" or (*a, "mean", "all", f"amplification_max_min{w}") in v.idx]))
    return out


def scaling_slopes(v: View) -> list[str]:
    out = ["## Scaling slope: module gradient norm against rank", "",
           "Log-log slope of each module's gradient norm against its rank, vs the same-seed uniform run: per "
           "seed with its OLS 95% t-interval across layers, and the mean over seeds [t-interval]. Predicted at "
           "init: fixed -1/2, rslora 0, per_rank +1/2 on LoRA norms; 0 on the full-weight signal.", ""]
    out.append(md_table([*v.labels, "seed", "predicted (LoRA)", "LoRA at init", "LoRA over training",
                         "full-weight at init", "full-weight over training"], slope_rows(v.st, v.fields)))
    return out


def module_shares(v: View) -> list[str]:
    out = ["## Module-level gradient shares", ""]
    out.append(md_table([*v.labels, "attention", "FFN", *v.modules],
                        [[*_labels(a, v.fields), cell(v.idx, a, "share_attention", "modules"),
                          cell(v.idx, a, "share_ffn", "modules"),
                          *[cell(v.idx, a, f"share_{m}", "modules") for m in v.modules]] for a in v.grad_arms]))
    return out


def same_shape(v: View) -> list[str]:
    out = ["## Same-shape modules: each projection type alone", "",
           "The statistics above restricted to one projection type, whose shape is the same in every layer, "
           "on scaling-normalised norms (a uniform run's raw norms).", ""]
    out.append(md_table([*v.labels, "projection", "max/min", v.top, "Gini"],
                        [[*_labels(a, v.fields), m, cell(v.idx, a, "max_min_ratio", m), cell(v.idx, a, "top30_share", m),
                          cell(v.idx, a, "gini", m)]
                         for a in v.grad_arms for m in v.modules if (*a, "mean", m, "gini") in v.idx]))
    return out
