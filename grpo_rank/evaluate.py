"""Evaluate a finished job again, without training: its base model, its saved adapter (adapter/), and the
same or other evaluation settings (what it does is pipeline/reevaluate.py).

    python -m grpo_rank.evaluate JOB_DIR                                # the job's own settings: its accuracy again
    python -m grpo_rank.evaluate JOB_DIR eval.n=null                    # every question of the split
    python -m grpo_rank.evaluate JOB_DIR eval.n=100 eval.scoring=tagged

Each evaluation is written to JOB_DIR/evaluations/<split>-n<n>-<scoring>-<hash>/ (eval.json, the typed
record, and outcomes.jsonl); the job's result.json and eval_outcomes.jsonl are left as they are. Only
`eval.*` settings can change (split, n, batch_size, max_new_tokens, scoring). Bad input (no finished
job, an unknown or ill-typed key, a value out of range, a changed adapter) is one line on stderr and
exit status 2, before any model loads.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from grpo_rank.errors import EXIT_INPUT, InputError, one_line
from grpo_rank.pipeline.reevaluate import prepare, run, thread_plan
from grpo_rank.runtime import malloc, threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_rank.evaluate",
                                     description="Evaluate a finished job's saved adapter again, without training.")
    parser.add_argument("job_dir", type=Path, help="a job folder (with result.json and adapter/)")
    parser.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE",
                        help="evaluation settings: eval.split, eval.n (null = all), eval.batch_size, "
                             "eval.max_new_tokens, eval.scoring")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        plan = prepare(args.job_dir, args.overrides)
    except InputError as exc:
        print(f"grpo-rank: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    # the job's own thread count unless OMP_NUM_THREADS says otherwise: float summation order follows it
    plan_threads = thread_plan(plan)
    threads.apply(plan_threads)  # before torch is imported, which run does
    record = run(plan, plan_threads)
    ev = record.eval
    print(f"{record.job.name}: accuracy {ev.accuracy:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] n={ev.n} "
          f"({ev.split}, {plan.cfg.eval.scoring} scoring) -> {plan.folder}")
    if plan.same_settings and plan.record.eval is not None:
        print(f"  the job's own settings; its recorded accuracy: {plan.record.eval.accuracy:.3f}")
    return 0


if __name__ == "__main__":
    malloc.restart_tuned()  # as a job's process (runtime/malloc.py)
    sys.exit(main())
