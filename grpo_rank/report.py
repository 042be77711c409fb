"""The cross-run report of one or more sweeps (grpo_rank/analysis/report does the work).

    python -m grpo_rank.report multirun/2025-06-01/12-00-00 [more sweeps] [--out DIR] [--no-wandb]
"""

import sys

from grpo_rank.analysis.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
