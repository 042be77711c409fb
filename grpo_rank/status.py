"""Where a sweep stands, one line per job (grpo_rank/sweep/status.py does the work).

    python -m grpo_rank.status multirun/<date>/<time> [--json]
"""

import sys

from grpo_rank.sweep.status import main

if __name__ == "__main__":
    sys.exit(main())
