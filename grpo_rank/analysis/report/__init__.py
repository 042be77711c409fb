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
wandb_mirror.py mirrors to W&B, cli.py is the command. Every statistic is defined in grpo_rank/analysis/stats.py
(the design's: the tests across seeds, their power and the rank-shift null, in stats_design.py) and again in the
report's "Definitions" section. Gradient statistics use the training phase's records
("train"), the gradients of the run at its own ranks. Arms are model x task x strategy x budget x
lora.alpha_mode x profile.signal x algorithm x lora.r (jobs.Arm). `synthetic.py` writes a
sweep of any size in the real record format (for tests and `python -m benchmarks.bench_report`).
"""

from grpo_rank.analysis.report.capacity import FIG3
from grpo_rank.analysis.report.cli import Report, build, main
from grpo_rank.analysis.report.discover import expected_jobs, find_jobs, load
from grpo_rank.analysis.report.figures import FIG1, FIG2
from grpo_rank.analysis.report.jobs import Arm, Job, arm_of
from grpo_rank.analysis.report.rewards import FIG5
from grpo_rank.analysis.report.trajectories import FIG4

__all__ = ["Arm", "FIG1", "FIG2", "FIG3", "FIG4", "FIG5", "Job", "Report", "arm_of", "build", "expected_jobs",
           "find_jobs", "load", "main"]
