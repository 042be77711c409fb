"""glibc's allocator, set for a training process before it starts: `python -m grpo_rank.run`, `... evaluate`
and `grpo-rank run|evaluate` start again once, at once, with these variables in their environment, which every
job process they launch (joblib or submitit workers, Slurm jobs) inherits.

Why: a GRPO step allocates and frees tensors of tens of MB (logits over a 49k vocabulary, activations) many
times, and glibc returns such blocks to the system when they are freed, so the next step faults the same
memory in again. Kept in the heap instead (served from the heap however large, never trimmed, grown 1 GiB
at a time), the demo job (SmolLM2-135M, 2 steps, 2 cores) trained in 0.89x the time with glibc's own
settings (41.2 s against 46.3 s, system CPU 11.6 s against 16.5 s; `benchmarks/bench_malloc.py`, the arms
alternated) and wrote gradient records equal to the bit. The cost: a process keeps its peak memory until
it ends, which a job's process does anyway within a step.

The variables must be there when the process starts (glibc reads them once, and `mallopt` caps the mmap
threshold at 32 MiB, which measured no gain), hence the new start. Any of them already set, or
GRPO_RANK_MALLOC=glibc, keeps the environment as it is; outside Linux with glibc nothing changes.
"""

from __future__ import annotations

import os
import platform
import sys

SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),  # served from the heap up to 4 GiB
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),  # freed memory stays with the process
    "MALLOC_TOP_PAD_": str(1 << 30),  # the heap grows by 1 GiB at a time (address space, not memory)
}
OPT_OUT = "GRPO_RANK_MALLOC"  # =glibc keeps glibc's own behaviour


def wanted(env: dict[str, str], system: str, libc: str) -> bool:
    """Whether a process with `env` on this system should start again with SETTINGS."""
    if system != "Linux" or libc != "glibc" or env.get(OPT_OUT) == "glibc":
        return False
    return not any(name in env for name in SETTINGS)


def restart_tuned() -> None:
    """Replace this process by the same command with SETTINGS, when `wanted`; returns only when not.
    Call it first thing from a command's entry point (never from a library function: it replaces the
    caller's process)."""
    env = dict(os.environ)
    if not wanted(env, platform.system(), platform.libc_ver()[0]):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv is the command as typed, interpreter options and `-m module` included
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**env, **SETTINGS})
