"""Parallel jobs benchmark: the same 4-job tiny sweep launched job after job (basic
launcher), side by side with submitit_local, and with joblib n_jobs=2, measured in one run and printed
as ratios to job after job (process start-up included). Each job takes its share of the cores
(threads.py), so side-by-side jobs must not collapse the way oversubscribed ones do; the per-job
training time is printed too, from the records.

    python -m benchmarks.bench_parallel              # 4 tiny jobs per launcher (~2 min on 2 cores)
    python -m benchmarks.bench_parallel --steps 4    # longer jobs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpo_rank.record.result import read_result

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "profile.steps=2", "grpo.max_completion_length=8", "eval.n=8", "eval.batch_size=8",
        "eval.max_new_tokens=8", "task.train_size=64", "strategy=uniform", "seed=0,1,2,3", "tracking.mode=disabled",
        "grpo.save_steps=0"]
LAUNCHERS = {
    "job after job": ["hydra/launcher=basic"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],  # what the default launcher runs on 2 cores
}


def run_sweep(name: str, extra: list[str], steps: int, out: Path) -> tuple[float, list[float]]:
    sweep = out / name.replace(" ", "_").replace("=", "")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the jobs decide their own threads
        env.pop(var, None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.run", "-m", *TINY, f"grpo.steps={steps}", *extra,
                           f"hydra.sweep.dir={sweep}", f"profile.cache_dir={out}/profiles"],
                          cwd=out, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: the sweep failed:\n{proc.stderr[-2000:]}")
    train = [read_result(p.parent).timings["train_s"] for p in sorted(sweep.glob("*/result.json"))]
    return wall, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, extra in LAUNCHERS.items():
            print(f"[bench] {name}: 4 tiny jobs, {args.steps} steps each", file=sys.stderr)
            results[name] = run_sweep(name, extra, args.steps, Path(tmp))
    base = results["job after job"][0]
    print(f"4-job tiny sweep, {os.cpu_count()} cores, wall time with process start-up:")
    for name, (wall, train) in results.items():
        print(f"  {name:16s} {wall:6.1f} s  ratio {wall / base:.2f}x  per-job train "
              f"{min(train):.1f}-{max(train):.1f} s")
    print("targets: submitit_local <= 1.3x job after job; joblib n_jobs=2 <= 1.0x (no slower)")


if __name__ == "__main__":
    main()
