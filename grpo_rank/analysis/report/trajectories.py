"""Rank trajectories of the runs whose ranks move during training (jobs.DYNAMIC: strategy=adalora):
per layer, its rank against the training step (fig4_rank_trajectories.png and one line per arm).

    python -m grpo_rank.run -m strategy=adalora seed=0,1,2
    python -m grpo_rank.report SWEEP --no-wandb     # then report/fig4_rank_trajectories.png

The profiler writes every module's current rank in the `rank` column of its rows in grad_norms.parquet
(constant per module for every other strategy). A layer's rank at a step is the sum of its modules'
ranks over the number of its modules, read from the training phase's "B" rows (one per module and step).
Only the columns and rows needed are read, and only a (steps x layers) array is kept per job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grpo_rank.analysis.report.figures import stacked_figure
from grpo_rank.analysis.report.jobs import Arm, Job, RankTrajectory, arm_name, varying

FIG4 = "fig4_rank_trajectories.png"


def read_rank_trajectory(path: Path | str, phase: str) -> RankTrajectory | None:
    """The per-layer rank at every recorded step of one phase of a grad_norms.parquet; None without rows.
    Parquet's row-group statistics let pyarrow skip the groups of other phases."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["step", "layer", "rank"],
                          filters=[("phase", "==", phase), ("matrix", "==", "B")])
    if table.num_rows == 0:
        return None
    step, layer, rank = (table.column(c).to_numpy() for c in ("step", "layer", "rank"))
    return layer_ranks(step, layer, rank)


def layer_ranks(step: np.ndarray, layer: np.ndarray, rank: np.ndarray) -> RankTrajectory:
    """One row per module and step -> per (step, layer) the rank summed over the layer's modules divided
    by their number (a numpy group-by); NaN where a layer has no row at a step."""
    steps, step_idx = np.unique(step, return_inverse=True)
    n_layers = int(layer.max()) + 1
    cell = step_idx.ravel() * n_layers + layer.astype(np.int64)
    size = steps.size * n_layers
    total = np.bincount(cell, weights=rank.astype(np.float64), minlength=size)
    count = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return RankTrajectory(steps=steps, layer_rank=mean.reshape(steps.size, n_layers).astype(np.float32))


def arm_trajectory(arm_jobs: list[Job]) -> tuple[RankTrajectory, int] | None:
    """An arm's trajectory: the mean over its seeds when they recorded the same steps and layers, else
    its first seed's; and how many seeds it is the mean of. None when no seed has one."""
    found = [j.trajectory for j in arm_jobs if j.trajectory is not None]
    if not found:
        return None
    first = found[0]
    same = [t for t in found if t.layer_rank.shape == first.layer_rank.shape and np.array_equal(t.steps, first.steps)]
    if len(same) < len(found):
        return first, 1
    return RankTrajectory(steps=first.steps, layer_rank=np.mean([t.layer_rank for t in found], axis=0)), len(found)


def trajectories(arms: dict[Arm, list[Job]]) -> dict[Arm, tuple[RankTrajectory, int]]:
    out = {}
    for arm, arm_jobs in arms.items():
        found = arm_trajectory(arm_jobs)
        if found is not None:
            out[arm] = found
    return out


def section(arms: dict[Arm, list[Job]]) -> list[str]:
    """The report's "Rank trajectories" section: the figure and one line per arm, or one line saying none."""
    found = trajectories(arms)
    out = ["## Rank trajectories", ""]
    if not found:
        return out + ["Rank trajectories: none (no job of a strategy whose ranks move, "
                      "adalora, with training-phase gradient records).", ""]
    show = varying(arms)
    out += [f"Figure 4, per-layer rank against the training step (sum over the layer's modules / their number): "
            f"![fig4]({FIG4})", ""]
    for arm, (t, n) in found.items():
        first, last = t.layer_rank[0], t.layer_rank[-1]
        how = f"mean of {n} seeds" if n > 1 else "one seed"
        out.append(f"- **{arm_name(arm, show)}** ({how}; steps {int(t.steps[0])}-{int(t.steps[-1])}): per-layer "
                   f"rank at the first step {np.nanmin(first):.2f}-{np.nanmax(first):.2f}, at the last "
                   f"{np.nanmin(last):.2f}-{np.nanmax(last):.2f} (min-max over layers; mean "
                   f"{np.nanmean(last):.2f}, lora.r {arm.r if arm.r is not None else 'n/a'}).")
    return out + [""]


def figure4(arms: dict[Arm, list[Job]], path: Path) -> bool:
    """One panel per arm: each layer's rank against the step, coloured by layer, lora.r dashed. Writes
    nothing and returns False when no arm has a trajectory."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    found = trajectories(arms)
    if not found:
        return False
    show = varying(arms)
    fig = stacked_figure(len(found))
    for i, (arm, (t, n)) in enumerate(found.items()):
        ax = fig.add_subplot(len(found), 1, i + 1)
        n_layers = t.layer_rank.shape[1]
        norm = Normalize(0, max(1, n_layers - 1))
        cmap = colormaps["viridis"]
        for layer in range(n_layers):
            ax.plot(t.steps, t.layer_rank[:, layer], color=cmap(norm(layer)), lw=1)
        if arm.r is not None:
            ax.axhline(arm.r, color="grey", ls="--", lw=1, label=f"lora.r = {arm.r}")
            ax.legend(fontsize=8, loc="upper right")
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer")
        how = f"mean of {n} seeds" if n > 1 else "one seed"
        ax.set_title(f"{arm.model} / {arm.task}: {arm_name(arm, show)}\nper-layer rank ({how})", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("rank (mean over modules)")
    fig.savefig(path, dpi=120)
    return True
