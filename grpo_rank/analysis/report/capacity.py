"""Capacity: held-out accuracy against trainable LoRA parameters (capacity.csv, fig3_capacity.png and
report.md's "Capacity" section), one panel per model x task x algorithm x alpha mode.

    python -m grpo_rank.run -m strategy=uniform lora.r=1,2,4,8,16,32,64 seed=0,1,2
    python -m grpo_rank.run -m strategy=none,proportional,random seed=0,1,2
    python -m grpo_rank.report SWEEP_1 SWEEP_2 --no-wandb     # report/capacity.csv, report/fig3_capacity.png

The uniform arms at the full budget are the curve, ordered by lora.r; every other allocation
(proportional, random, shuffled, adalora, any reduced budget) is a marker at its own parameter count;
the base model, which trains nothing, is a horizontal line. Each arm is one point per seed and the mean
over its seeds with a 95% Student-t interval (stats.t_interval), as Table 1; a deterministic arm (the
base model under greedy decoding) is its one evaluation with its Wilson interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grpo_rank.allocation.importance import ALPHA_MODES
from grpo_rank.analysis import stats
from grpo_rank.analysis.report.figures import empty_figure, stacked_figure
from grpo_rank.analysis.report.jobs import (
    DEFAULT_ALGORITHM,
    Arm,
    Job,
    arm_name,
    arms_of,
    deterministic,
    evaluations,
    seed_label,
    varying,
)
from grpo_rank.analysis.report.tables import arm_labels, fmt, interval, md_table
from grpo_rank.objective.algorithms import ALGORITHMS

FIG3 = "fig3_capacity.png"
KINDS = ("base", "uniform", "allocation")  # the base line, the uniform curve, the other allocations
CAPACITY_COLUMNS = [*Arm._fields, "kind", "trainable_params", "params_per_seed", "seeds", "accuracy_per_seed",
                    "accuracy_mean", "accuracy_ci95_low", "accuracy_ci95_high", "n_seeds"]


@dataclass
class ArmPoints:
    """One arm's seeds on the capacity plane: the trainable parameters and the accuracy of each."""

    arm: Arm
    kind: str  # KINDS
    seeds: list[str]
    params: np.ndarray  # one per seed; empty for the base model
    accuracy: np.ndarray  # one per seed
    wilson: tuple[float, float] | None = None  # a deterministic arm's one evaluation: its Wilson interval

    def summary(self) -> tuple[float, float, float]:
        """(mean, low, high): the t-interval over the seeds, or the one evaluation's Wilson interval."""
        if self.wilson is not None:
            return float(self.accuracy.mean()), *self.wilson
        return stats.t_interval(self.accuracy, bounds=(0, 1))

    @property
    def panel(self) -> tuple[str, str, str, str]:
        return self.arm.model, self.arm.task, self.arm.algorithm, self.arm.alpha_mode


def kind_of(arm: Arm, fraction: float | None) -> str:
    if arm.strategy == "none":
        return "base"
    # a uniform arm at a reduced budget is an allocation of its own, not a point of the lora.r curve
    return "uniform" if arm.strategy == "uniform" and fraction in (None, 1.0) else "allocation"


def _index(value: str, order) -> int:
    order = list(order)
    return order.index(value) if value in order else len(order)


def capacity_points(jobs: list[Job]) -> list[ArmPoints]:
    """Every arm with a usable seed: evaluated and, unless it is the base model, with a trainable parameter
    count above 0. Per model and task the base model first, then by algorithm and alpha mode (ALGORITHMS
    and ALPHA_MODES order) the uniform curve by lora.r, then the other allocations in Table 1's order."""
    found = []
    for arm, arm_jobs in arms_of(jobs).items():
        fraction = next((j.budget_fraction for j in arm_jobs if j.budget_fraction is not None), None)
        kind = kind_of(arm, fraction)
        use = [j for j in evaluations(arm, arm_jobs)
               if kind == "base" or (j.capacity_params is not None and j.capacity_params > 0)]
        once = deterministic(arm, arm_jobs) and len(use) == 1
        if use:
            found.append(ArmPoints(arm, kind, [seed_label(j) for j in use],
                                   np.array([j.capacity_params for j in use] if kind != "base" else [], dtype=float),
                                   np.array([j.result.eval.accuracy for j in use], dtype=float),
                                   (use[0].result.eval.ci_low, use[0].result.eval.ci_high) if once else None))
    # a stable sort: arms_of's order (Table 1's, lora.r ascending) stays within each kind
    return sorted(found, key=lambda p: (p.arm.model, p.arm.task, p.kind != "base", _index(p.arm.algorithm, ALGORITHMS),
                                        _index(p.arm.alpha_mode, ALPHA_MODES), KINDS.index(p.kind)))


def capacity_rows(points: list[ArmPoints]) -> list[dict]:
    """capacity.csv: one row per arm; trainable_params is the mean of its seeds' counts ("" for the base
    model), accuracy the mean over seeds with its t-interval (NaN bounds with one seed), or the Wilson
    interval of a deterministic arm's one evaluation."""
    rows = []
    for p in points:
        mean, lo, hi = p.summary()
        rows.append({**p.arm._asdict(), "kind": p.kind,
                     "trainable_params": float(p.params.mean()) if p.params.size else "",
                     "params_per_seed": "; ".join(f"{s} {int(x)}" for s, x in zip(p.seeds, p.params)),
                     "seeds": " ".join(p.seeds),
                     "accuracy_per_seed": "; ".join(f"{s} {a:.4f}" for s, a in zip(p.seeds, p.accuracy)),
                     "accuracy_mean": mean, "accuracy_ci95_low": lo, "accuracy_ci95_high": hi,
                     "n_seeds": len(p.seeds)})
    return rows


def _params(x) -> str:
    return "" if x == "" else (f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}")


def section(rows: list[dict], fields: list[str]) -> list[str]:
    """report.md's "Capacity" section: the figure and capacity.csv as a table (lora.r always shown)."""
    out = ["## Capacity: accuracy against trainable parameters", "",
           "Held-out accuracy against trainable LoRA parameters, per model x task x algorithm x alpha mode: "
           "the uniform arms at the full budget ordered by lora.r (the curve), every other allocation at its own "
           f"parameter count, the base model as a line; mean over seeds [95% t-interval; Wilson for the one "
           f"evaluation of a deterministic arm]. Figure 3: ![fig3]({FIG3}); "
           "the rows are `capacity.csv`.", ""]
    if not any(r["kind"] != "base" for r in rows):
        return out + ["n/a: no trained arm with an evaluation and a trainable-parameter count.", ""]
    shown = [f for f in Arm._fields if f in fields or f == "r"]
    out.append(md_table(
        [*(f.replace("_", " ") for f in shown), "kind", "trainable params", "accuracy per seed",
         "mean [95% t-interval]"],
        [[*arm_labels(r, shown), r["kind"], _params(r["trainable_params"]), r["accuracy_per_seed"],
          f"{fmt(r['accuracy_mean'], 4)} {interval(r['accuracy_ci95_low'], r['accuracy_ci95_high'])}"]
         for r in rows]))
    return out


def figure3(points: list[ArmPoints], path: Path) -> None:
    """One panel per model x task x algorithm x alpha mode, log x axis: the seeds as dots, each arm's mean
    with its t-interval as an error bar, the uniform means joined in lora.r order, the base model dashed."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels: dict[tuple, list[ArmPoints]] = {}
    for p in points:
        if p.kind != "base":
            panels.setdefault(p.panel, []).append(p)
    fig = stacked_figure(len(panels))
    if not panels:
        empty_figure(fig, "no trained arm with an evaluation and a trainable-parameter count")
    show = varying([p.arm for p in points])
    for i, (panel, mine) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        ax.set_xscale("log")
        # plain numbers: the default 10^k labels go through mathtext, a third of this figure's time
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        for base in (p for p in points if p.kind == "base" and p.panel[:2] == panel[:2]):
            mean, lo, hi = base.summary()
            ax.axhline(mean, color="grey", ls="--", lw=1, label=f"base model (mean of {len(base.seeds)}: {mean:.3f})")
            if math.isfinite(lo):
                ax.axhspan(lo, hi, color="grey", alpha=0.08)
        uniform = [p for p in mine if p.kind == "uniform"]
        if uniform:
            _draw(ax, uniform, "tab:blue", "o", "uniform, by lora.r", line=True)
            for p in uniform:
                ax.annotate(f"r={p.arm.r}", (p.params.mean(), p.accuracy.mean()), textcoords="offset points",
                            xytext=(4, -10), fontsize=7)
        others = [p for p in mine if p.kind != "uniform"]
        for k, p in enumerate(others):
            # the panel's title names its algorithm and alpha mode: the label need not
            label = arm_name(p.arm._replace(algorithm=DEFAULT_ALGORITHM, alpha_mode=Arm._field_defaults["alpha_mode"]),
                             show)
            _draw(ax, [p], f"C{(k + 1) % 10}", "sDv^<>P*Xh"[k % 10], label, line=False)
        # the x range by hand: matplotlib collapses a log axis whose error bars all sit at one count
        xs = np.concatenate([p.params for p in mine])
        ax.set_xlim(xs.min() / 2, xs.max() * 2)
        model, task, algorithm, alpha_mode = panel
        ax.set_title(f"{model} / {task}: algorithm={algorithm}, alpha_mode={alpha_mode}")
        ax.set_xlabel("trainable LoRA parameters (log scale)")
        ax.set_ylabel("held-out accuracy")
        ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=120)


def _draw(ax, arms: list[ArmPoints], color: str, marker: str, label: str, line: bool) -> None:
    """The seeds as small dots and the arms' means with t-interval error bars (none with one seed)."""
    xs = np.concatenate([p.params for p in arms])
    ax.plot(xs, np.concatenate([p.accuracy for p in arms]), ".", color=color, alpha=0.45, ms=5)
    summary = [p.summary() for p in arms]
    means = np.array([m for m, _, _ in summary])
    err = np.nan_to_num(np.array([[m - lo, hi - m] for m, lo, hi in summary]).T)  # NaN with one seed: no bar
    ax.errorbar([p.params.mean() for p in arms], means, yerr=err, color=color, marker=marker, ms=6, capsize=3,
                ls="-" if line else "none", label=label)
