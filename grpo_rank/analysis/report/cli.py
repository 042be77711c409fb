"""The cross-run report of one or more sweeps: Table 1, the gradient-share figures, the statistics of the
study, paired tests between strategies, and a W&B run that mirrors them.

    python -m grpo_rank.report multirun/2025-06-01/12-00-00
    python -m grpo_rank.report multirun/2025-06-01/12-00-00 multirun/2025-06-02/09-30-00 --out report/
    python -m grpo_rank.report SWEEP --early 0.2 --late 0.2 --no-wandb
    python -m grpo_rank.report SWEEP --wandb-report     # also a W&B dashboard (online, wandb-workspaces)

Writes into `<first sweep>/report/` (or --out): report.md (also printed), table1.csv, runs.csv,
stats.csv, paired.csv, rank_shift.csv, capacity.csv, fig1_uniform_grad_share.png, fig2_amplification.png,
fig3_capacity.png, when a job's ranks move (adalora) fig4_rank_trajectories.png and, when a job
recorded per-reward gradients (profile.per_reward=true), rewards.csv and fig5_reward_landscapes.png.
Partial sweeps are fine: jobs without result.json, failed jobs, and jobs that Hydra's multirun.yaml
expected but never started are listed; a result.json that cannot be read is a note. When the same job
(model, task, strategy, budget, seed) appears in several sweeps, a finished one wins over a failed one
and a later sweep on the command line over an earlier one.

The package follows the data: discover.py finds the jobs and reduces each one's records to small arrays
(one job at a time), tables.py computes Table 1, the runs and the paired tests, gradstats.py the
gradient statistics (with the scaling slope and the three views of amplification: raw, scaling-
normalised, full-weight), figures.py draws, capacity.py the capacity curve (accuracy against trainable
parameters), trajectories.py the rank trajectories of adalora runs, rewards.py the per-reward gradient
landscapes (reward_grads.parquet), markdown.py writes report.md (definitions.py its "Definitions"),
wandb_mirror.py mirrors to W&B, cli.py is the command. Every statistic is defined in
grpo_rank/analysis/stats.py (those of the design, the tests across seeds, their power and the rank-shift
null, in stats_design.py) and again in the report's "Definitions" section. Gradient statistics use the
training phase's records ("train"), the gradients of the run at its own ranks. Arms are model x task x
strategy x budget x lora.alpha_mode x profile.signal x algorithm x lora.r (jobs.Arm). tests/synthetic.py
writes a sweep of any size in the real record format (for tests and `python -m benchmarks.bench_report`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from grpo_rank.analysis.report.capacity import CAPACITY_COLUMNS, FIG3, capacity_points, capacity_rows, figure3
from grpo_rank.analysis.report.discover import load
from grpo_rank.analysis.report.figures import FIG1, FIG2, figure1, figure2
from grpo_rank.analysis.report.gradstats import RANK_SHIFT_COLUMNS, STATS_COLUMNS, rank_shift_rows, stats_rows
from grpo_rank.analysis.report.jobs import Job, arms_of
from grpo_rank.analysis.report.markdown import ReportData, render
from grpo_rank.analysis.report.rewards import FIG5, REWARD_CSV_COLUMNS, REWARDS_CSV, figure5, reward_rows
from grpo_rank.analysis.report.tables import PAIRED_COLUMNS, paired_rows, run_rows, table1_rows, write_csv
from grpo_rank.analysis.report.trajectories import FIG4, figure4


@dataclass
class Report:
    out: Path
    markdown: str
    jobs: list[Job]


def build(sweeps: list[Path], out: Path, early: float = 0.25, late: float = 0.25, use_wandb: bool = True,
          dashboard: bool = False, progress: bool = True) -> Report:
    """Load the sweeps, compute every table and figure, write them under `out`, optionally mirror to W&B."""
    jobs, notes = load(sweeps, early, late, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    t1, runs, st, paired = table1_rows(jobs), run_rows(jobs), stats_rows(jobs), paired_rows(jobs)
    write_csv(out / "table1.csv", t1)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "stats.csv", st, STATS_COLUMNS)
    write_csv(out / "paired.csv", paired, None if paired else PAIRED_COLUMNS)
    shifts = rank_shift_rows(jobs)
    write_csv(out / "rank_shift.csv", shifts, RANK_SHIFT_COLUMNS)
    points = capacity_points(jobs)
    capacity = capacity_rows(points)
    write_csv(out / "capacity.csv", capacity, CAPACITY_COLUMNS)
    figure1(jobs, out / FIG1)
    figure2(jobs, out / FIG2)
    figure3(points, out / FIG3)
    # no adalora job, no Figure 4: a figure from an earlier report of the same folder must not stay
    (out / FIG4).unlink(missing_ok=True)
    has_fig4 = figure4(arms_of(jobs), out / FIG4)
    # per-reward records are opt-in (profile.per_reward): without them no rewards.csv and no Figure 5, also
    # none left from an earlier report of the same folder
    rewards = reward_rows(arms_of(jobs))
    for stale in (REWARDS_CSV, FIG5):
        (out / stale).unlink(missing_ok=True)
    if rewards:
        write_csv(out / REWARDS_CSV, rewards, REWARD_CSV_COLUMNS)
        figure5(arms_of(jobs), out / FIG5)
    if use_wandb:
        from grpo_rank.analysis.report.wandb_mirror import log_wandb, summary_values

        figures = {"fig1_uniform_grad_share": out / FIG1, "fig2_amplification": out / FIG2,
                   "fig3_capacity": out / FIG3, **({"fig4_rank_trajectories": out / FIG4} if has_fig4 else {}),
                   **({"fig5_reward_landscapes": out / FIG5} if rewards else {})}
        wandb_line = log_wandb(out, jobs, sweeps, {"table1": t1, "stats": st, "paired": paired, "runs": runs,
                                                     "rank_shift": shifts, "capacity": capacity,
                                                     **({"rewards": rewards} if rewards else {})},
                               figures, summary_values(t1, st), dashboard)
    else:
        wandb_line = "W&B: skipped (--no-wandb)."
        if dashboard:
            wandb_line += " W&B dashboard: skipped, --no-wandb was given."
    md = render(ReportData(jobs, notes, sweeps, t1, st, paired, capacity, rewards, early, late, wandb_line))
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
                   help="also build a W&B Report (dashboard) of the sweep: its spec is written to "
                        "wandb_report.json; it is saved to W&B in online mode (needs wandb-workspaces)")
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
