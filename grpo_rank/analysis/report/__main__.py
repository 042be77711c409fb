import sys

from grpo_rank.analysis.report.cli import main

sys.exit(main())
