"""The cross-run report of one or more sweeps (`python -m grpo_rank.report SWEEP...`): what it writes and
how it reads the job folders is in cli.py's docstring; the names below are what tests and tools use."""

from grpo_rank.analysis.report.capacity import FIG3
from grpo_rank.analysis.report.cli import Report, build, main
from grpo_rank.analysis.report.discover import expected_jobs, find_jobs, load
from grpo_rank.analysis.report.figures import FIG1, FIG2
from grpo_rank.analysis.report.jobs import Arm, Job, arm_of
from grpo_rank.analysis.report.rewards import FIG5
from grpo_rank.analysis.report.trajectories import FIG4

__all__ = ["Arm", "FIG1", "FIG2", "FIG3", "FIG4", "FIG5", "Job", "Report", "arm_of", "build", "expected_jobs",
           "find_jobs", "load", "main"]
