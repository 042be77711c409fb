"""`grpo-rank <command> ...`, the console command an install puts on PATH: the same commands as
`python -m grpo_rank.<command> ...`.

    grpo-rank run [-m] [key=value ...]           # one job, or a sweep with -m (run.py; Hydra overrides)
    grpo-rank report SWEEP... [--out DIR]        # the cross-run report (analysis/report)
    grpo-rank status SWEEP [--json]              # where a sweep stands, one line per job (sweep/status.py)
    grpo-rank evaluate JOB_DIR [eval.KEY=VALUE]  # a finished job evaluated again (evaluate.py)

A command's module is imported only once it is chosen (`status` starts without torch), by name, so a
command whose module this copy lacks is one line on stderr and exit status 2, not a crash at start.
"""

from __future__ import annotations

import importlib
import sys

from grpo_rank.errors import EXIT_INPUT
from grpo_rank.runtime import malloc

# command -> (module, its entry point taking the remaining arguments, what it does)
COMMANDS = {
    "run": ("grpo_rank.run", "command", "one job, or a sweep with -m (Hydra overrides key=value)"),
    "report": ("grpo_rank.report", "main", "the cross-run report of one or more sweeps"),
    "status": ("grpo_rank.status", "main", "where a sweep stands, one line per job"),
    "evaluate": ("grpo_rank.evaluate", "main", "evaluate a finished job again, without training"),
}
# the commands that train or generate start again with glibc's allocator set (runtime/malloc.py)
TUNED = ("run", "evaluate")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, _, what) in COMMANDS.items()]
    return "\n".join(["usage: grpo-rank <command> [arguments]  (grpo-rank <command> --help for its own)", *lines])


def main(argv: list[str] | None = None) -> int:
    from_console = argv is None  # the installed command itself, not a caller in this process
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_INPUT
    name, rest = argv[0], argv[1:]
    if from_console and name in TUNED:
        malloc.restart_tuned()
    if name not in COMMANDS:
        print(f"grpo-rank: unknown command {name!r}; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_INPUT
    module_name, entry, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the command is there but something it imports is not: a real error
            raise
        print(f"grpo-rank: {name}: this installation has no {module_name}; install a grpo-rank that has it",
              file=sys.stderr)
        return EXIT_INPUT
    return int(getattr(module, entry)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
