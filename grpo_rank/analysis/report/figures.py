"""The report's figures, from the jobs' reduced gradients (discover.GradSummary):

- Figure 1: per-layer share of the gradient norm under uniform ranks, mean over seeds, min-max band;
- Figure 2: the same share, uniform vs each other strategy, with the allocated ranks as bars;
- Figures 3 and 4, the capacity curve and the rank trajectories, are drawn by capacity.py and
  trajectories.py with the helpers here.

Drawn on a bare matplotlib Figure (Agg canvas), so no GUI backend and no pyplot state are involved.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from grpo_rank.analysis import stats
from grpo_rank.analysis.report.jobs import Arm, Job, arm_name, arms_of, uniform_reference, varying

FIG1 = "fig1_uniform_grad_share.png"
FIG2 = "fig2_amplification.png"


def mean_share_maps(arm_jobs: list[Job]) -> np.ndarray | None:
    """(seeds x layers) shares S(l) / sum S of an arm's jobs; None without gradients or when the jobs
    differ in their number of layers."""
    maps = [stats.shares(j.grads.importance) for j in arm_jobs if j.grads is not None]
    if not maps or len({m.size for m in maps}) != 1:
        return None
    return np.vstack(maps)


PANEL_IN, TOP_IN, BOTTOM_IN, GAP_IN = 3.6, 0.4, 0.55, 0.95  # inches: panel, margins, gap between panels


def stacked_figure(n_panels: int):
    """A figure of n stacked panels with fixed margins. Not constrained layout: measuring every text
    to place the panels took ~0.4 s of the report's few seconds, and these panels need no measuring."""
    from matplotlib.figure import Figure

    n = max(1, n_panels)
    height = n * PANEL_IN
    fig = Figure(figsize=(8, height))
    axes_in = (height - TOP_IN - BOTTOM_IN - (n - 1) * GAP_IN) / n
    fig.subplots_adjust(left=0.09, right=0.91, top=1 - TOP_IN / height, bottom=BOTTOM_IN / height,
                        hspace=GAP_IN / axes_in)
    return fig


def empty_figure(fig, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def figure1(jobs: list[Job], path: Path) -> None:
    """Per-layer gradient share under uniform ranks: mean over seeds, band min-max, one dot per seed."""
    arms = arms_of(jobs)
    show = varying(arms)
    panels: dict[tuple, list[Arm]] = defaultdict(list)
    maps_of = {arm: mean_share_maps(arms[arm]) for arm in arms if arm.strategy == "uniform"}
    for arm, maps in maps_of.items():
        if maps is not None:
            panels[(arm.model, arm.task)].append(arm)
    fig = stacked_figure(len(panels))
    if not panels:
        empty_figure(fig, "no uniform-rank job with gradient records")
    for i, (mt, mt_arms) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for arm in mt_arms:
            maps = maps_of[arm]
            x = np.arange(maps.shape[1])
            band = ", band min-max" if len(maps) > 1 else ""
            line, = ax.plot(x, maps.mean(axis=0), marker="o", ms=3,
                            label=f"{arm_name(arm, show)}: mean of {len(maps)} seed(s){band}")
            if len(maps) > 1:
                ax.fill_between(x, maps.min(axis=0), maps.max(axis=0), color=line.get_color(), alpha=0.25)
                # one marker series for every seed: a line per seed would cost a draw call each
                ax.plot(np.tile(x, len(maps)), maps.ravel(), ".", color=line.get_color(), alpha=0.5, ms=4)
        # one model per panel, so one layer count: the line is drawn once, not once per arm
        ax.axhline(1 / maps_of[mt_arms[0]].shape[1], color="grey", ls="--", lw=1, label="equal share 1/L")
        ax.set_title(f"{mt[0]} / {mt[1]}: per-layer share of the LoRA gradient norm (uniform ranks)")
        ax.set_xlabel("layer")
        ax.set_ylabel("share of sum over layers")
        # beside the axes: inside, a legend of several arms covers the layers it describes
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=120, bbox_inches="tight")


def figure2(jobs: list[Job], path: Path) -> None:
    """Normalised importance under uniform vs each other strategy, allocated ranks on a second axis."""
    arms = arms_of(jobs)
    show = varying(arms)
    panels = []
    for arm, arm_jobs in arms.items():
        ref = uniform_reference(arms, arm) if arm.strategy not in ("none", "uniform") else None
        if ref is None:
            continue
        mine, theirs = mean_share_maps(arm_jobs), mean_share_maps(arms[ref])
        if mine is not None and theirs is not None and mine.shape[1] == theirs.shape[1]:
            panels.append((arm, ref, mine, theirs))
    fig = stacked_figure(len(panels))
    if not panels:
        empty_figure(fig, "no non-uniform strategy with a uniform reference and gradient records")
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
                    label=f"allocated rank ({arm.strategy}, mean{', min-max' if varies else ''} over seeds)",
                    yerr=(mean - ranks.min(axis=0), ranks.max(axis=0) - mean) if varies else None,
                    ecolor="tab:green", capsize=2)
            ax2.set_ylabel("LoRA rank")
        ax.set_zorder(ax2.get_zorder() + 1)  # the lines over the bars
        ax.patch.set_visible(False)
        for maps, label, color in ((theirs, arm_name(ref, show), "tab:blue"),
                                   (mine, arm_name(arm, show), "tab:red")):
            ax.plot(x, maps.mean(axis=0), marker="o", ms=3, color=color, label=f"{label} (mean of {len(maps)})")
            if len(maps) > 1:
                ax.fill_between(x, maps.min(axis=0), maps.max(axis=0), color=color, alpha=0.2)
        ax.set_title(f"{arm.model} / {arm.task}: {arm_name(arm, show)} vs {arm_name(ref, show)}")
        ax.set_xlabel("layer")
        ax.set_ylabel("share of gradient norm")
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=8, loc="upper left")
    fig.savefig(path, dpi=120)
