"""glibc's allocator benchmark (grpo_rank/runtime/malloc.py): the same demo job (SmolLM2-135M, the defaults, 2
GRPO steps, 8 questions) with glibc's own allocator (GRPO_RANK_MALLOC=glibc) and with the settings the commands
start again with, alternated, one job at a time; printed: training time and system CPU time per arm, their
ratio, and whether the gradient records are equal to the bit.

    python -m benchmarks.bench_malloc                  # 2 jobs per arm (~8 min on 2 cores)
    python -m benchmarks.bench_malloc --repeats 1 model=tiny   # a smoke check, seconds
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from grpo_rank.record.files import GRADS
from grpo_rank.record.result import read_result
from grpo_rank.runtime import malloc

ROOT = Path(__file__).resolve().parents[1]
JOB = ["grpo.steps=2", "eval.n=8", "tracking.mode=disabled", "grpo.save_steps=0", "tracking.completions_every=0"]
ARMS = {"glibc": {malloc.OPT_OUT: "glibc"}, "tuned": {}}


def run_job(arm: str, out: Path, overrides: list[str]) -> tuple[float, float, Path]:
    """One job in a fresh process: (training seconds from its record, the process's system CPU seconds, its folder)."""
    env = {k: v for k, v in os.environ.items() if k not in malloc.SETTINGS and k != malloc.OPT_OUT}
    env.update(ARMS[arm], PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.run", *JOB, *overrides, f"hydra.run.dir={out}",
                           f"profile.cache_dir={out.parent}/profiles"], cwd=out.parent, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{arm}: the job failed:\n{proc.stderr[-2000:]}")
    system = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before
    return read_result(out).timings["train_s"], system, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="config overrides, as for grpo_rank.run")
    args = ap.parse_args(argv)
    times: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    folders: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for arm in ARMS:  # alternated, so that drift hits both arms alike
                print(f"[bench] repeat {rep + 1}/{args.repeats}: {arm}", file=sys.stderr)
                train, system, folders[arm] = run_job(arm, Path(tmp) / f"{arm}-{rep}", args.overrides)
                times[arm].append((train, system))
        a, b = (pd.read_parquet(folders[arm] / GRADS) for arm in ARMS)
        equal = a.equals(b)
    print(f"demo job, {' '.join(args.overrides) or 'defaults'}, 2 steps, {args.repeats} job(s) per arm, one at a time:")
    med = {arm: (statistics.median(t for t, _ in v), statistics.median(s for _, s in v)) for arm, v in times.items()}
    for arm, (train, system) in med.items():
        print(f"  {arm:6s} training {train:6.1f} s   system CPU {system:6.1f} s")
    print(f"tuned / glibc training time: {med['tuned'][0] / med['glibc'][0]:.2f}x (target <= 0.9x); "
          f"gradient records equal to the bit: {equal}")


if __name__ == "__main__":
    main()
