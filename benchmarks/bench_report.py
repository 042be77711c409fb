"""Report benchmark: wall time and peak memory of the cross-run report on generated
paper-length sweeps of 30 and 300 jobs, measured in one run and printed with their ratios.

    python -m benchmarks.bench_report                      # 30 and 300 jobs x 1000 steps x 420 matrices
    python -m benchmarks.bench_report --jobs 30 --steps 100 # a quick look
    python -m benchmarks.bench_report --dir /tmp/sweeps     # keep the generated sweeps and reuse them

Sweeps are written by tests.synthetic in the real record format (result.json, grad_norms
.parquet, eval_outcomes.jsonl; ~2.2 MB and ~0.3 s per paper-length job), into a temporary folder unless
--dir is given. Each report runs in a fresh process (`build`, no W&B, no progress bar); its time runs
from before `import grpo_rank.report` to the last file written (interpreter start excluded, imports
included), its peak memory is the process's maximum resident set. Targets: 30 jobs under 3 s, and the
300 jobs' peak within 1.5x of the 30 jobs' (memory must not grow with the number of jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.synthetic import make_sweep

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from pathlib import Path
from grpo_rank.analysis.report.cli import build
t1 = time.perf_counter()
rep = build([Path(sys.argv[1])], Path(sys.argv[2]), use_wandb=False, progress=False)
t2 = time.perf_counter()
print(json.dumps({"seconds": t2 - t0, "import_s": t1 - t0, "jobs": sum(j.status == "ok" for j in rep.jobs),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def sweep_for(root: Path, jobs: int, steps: int, layers: int, modules: int) -> Path:
    """A generated sweep of this shape under root, made once (a finished marker says it is complete)."""
    sweep = root / f"j{jobs}_t{steps}_l{layers}_m{modules}" / "multirun" / "bench" / "sweep"
    marker = sweep.parent / "complete"
    if not marker.exists():
        t = time.perf_counter()
        make_sweep(sweep, jobs=jobs, steps=steps, layers=layers, modules=modules)
        marker.write_text("")
        print(f"generated {jobs} jobs in {time.perf_counter() - t:.0f} s: {sweep}", file=sys.stderr)
    return sweep


def measure(sweep: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(sweep), str(out)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"report failed on {sweep}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, nargs="+", default=[30, 300], help="sweep sizes; the first is the reference")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--modules", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1, help="reports per size; the fastest time and largest peak count")
    p.add_argument("--dir", type=Path, help="where generated sweeps are kept (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grpo_rank_bench_") as tmp:
        root = args.dir or Path(tmp)
        results = {}
        for n in args.jobs:
            sweep = sweep_for(root, n, args.steps, args.layers, args.modules)
            runs = [measure(sweep, Path(tmp) / f"report_{n}_{i}") for i in range(args.repeat)]
            results[n] = {"seconds": min(r["seconds"] for r in runs), "import_s": min(r["import_s"] for r in runs),
                          "peak_mb": max(r["peak_mb"] for r in runs), "jobs": runs[0]["jobs"]}
    matrices = args.layers * args.modules * 2
    print(f"report on generated sweeps: {args.steps} steps x {matrices} adapter matrices per job; "
          f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'jobs':>6} {'time s':>8} {'imports s':>10} {'ms/job':>8} {'peak MB':>8}")
    for n, r in results.items():
        print(f"{n:>6} {r['seconds']:>8.2f} {r['import_s']:>10.2f} {1000 * r['seconds'] / n:>8.0f} {r['peak_mb']:>8.0f}")
    ref = args.jobs[0]
    print(f"{ref} jobs: {results[ref]['seconds']:.2f} s (target < 3 s for 30 jobs x 1000 steps)")
    for n in args.jobs[1:]:
        print(f"{n} vs {ref} jobs: time {results[n]['seconds'] / results[ref]['seconds']:.2f}x for "
              f"{n / ref:.0f}x the jobs; peak memory {results[n]['peak_mb'] / results[ref]['peak_mb']:.2f}x "
              "(target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
