"""The training step benchmark: where a GRPO step's time goes, with the full-weight signal on and off,
against a plain TRL + PEFT step, measured side by side in one run (speed drifts ~50% between runs on a
shared machine, so only ratios taken in the same run mean anything).

Three arms, interleaved per repeat so that drift hits them alike and rotated so that each takes each place,
same settings and seed (hence the same generations): `plain` (TRL GRPOTrainer + PEFT as a user would script
it, the trainer clips), `off` (grpo-rank's train() with profile.full_weight=false), `on`
(profile.full_weight=true). Printed: every stage's share of the step per arm (stages.py), and the targets with
their measured ratios:

    full-weight hooks <= 10% of an `on` step; `off` step <= 1.05x a `plain` step; profiler <= 1% of a step

    python -m benchmarks.bench_step                       # SmolLM2-135M, the demo settings
    python -m benchmarks.bench_step model=tiny steps=3    # seconds, a smoke check
    make bench ARGS="repeats=3"

Arguments are `key=value`: any config override (as for grpo_rank.run) plus steps=N (per arm and repeat; the
first of each is dropped as warm-up) and repeats=N.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from peft import LoraConfig
from transformers import set_seed
from trl import GRPOTrainer

from benchmarks.stages import STAGES, StageClock, median_fractions
from grpo_rank.allocation import lora
from grpo_rank.config.schema import to_typed
from grpo_rank.config.validate import validate
from grpo_rank.data import models
from grpo_rank.data.tasks import load_split, prompt_dataset
from grpo_rank.training.train import grpo_args, reward_functions, train

ARMS = ("plain", "off", "on")
TARGETS = {"hooks": 0.10, "off_vs_plain": 1.05, "profiler": 0.01}


def _compose(overrides: list[str]):
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = to_typed(compose(config_name="config", overrides=overrides))
    validate(cfg)
    return cfg


def plain_trl(cfg, model, tok, data, steps: int, out: Path, clock: StageClock) -> None:
    """The reference: TRL + PEFT as a user would script it, no grpo-rank code in the loop."""
    args = grpo_args(cfg, out, steps)
    args.max_grad_norm = cfg.grpo.max_grad_norm  # the trainer clips, as usual
    set_seed(cfg.seed)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_functions(cfg.grpo), args=args,
                          train_dataset=data, processing_class=tok,
                          peft_config=LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 lora_dropout=cfg.lora.dropout,
                                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"),
                          callbacks=[clock])
    trainer.train()


def ours(cfg, model, tok, data, steps: int, out: Path, clock: StageClock) -> None:
    """The real pipeline's train()."""
    ranks = [cfg.lora.r] * lora.num_layers(lora.sites_for(model, cfg.lora))
    train(model, tok, data, ranks, cfg, phase="train", steps=steps, job_dir=out, callbacks=[clock])


def run_arms(overrides: list[str], steps: int, repeats: int) -> tuple[dict[str, list[dict]], str, list[int]]:
    cfgs = {"plain": _compose(overrides), "off": _compose([*overrides, "profile.full_weight=false"]),
            "on": _compose([*overrides, "profile.full_weight=true"])}
    base = cfgs["plain"]
    data = prompt_dataset(load_split(base.task, "train"), base.task.system_prompt, base.task.few_shot)
    rows: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    kept = [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            # each repeat starts with another arm: an arm always run first or last would carry the order's bias
            # (a process's allocator and caches warm up over its arms)
            for arm in ARMS[rep % len(ARMS):] + ARMS[:rep % len(ARMS)]:
                cfg = cfgs[arm]
                model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
                out = Path(tmp) / f"{arm}{rep}"
                out.mkdir()
                print(f"[bench] repeat {rep + 1}/{repeats}: {arm}, {steps} steps", file=sys.stderr)
                clock = StageClock()
                with clock.installed():
                    (plain_trl if arm == "plain" else ours)(cfg, model, tok, data, steps, out, clock)
                rows[arm] += clock.steps[1:]  # the first step warms caches and allocators up
                kept = [a + b for a, b in zip(kept, clock.rows)]
    return rows, base.model.name, kept


def report(rows: dict[str, list[dict]], model: str, steps: int, repeats: int, kept: list[int]) -> None:
    fractions, medians = {}, {}
    for arm in ARMS:
        fractions[arm], medians[arm] = median_fractions(rows[arm])
    print(f"model={model} steps/arm={steps}x{repeats} (first step of each dropped); share of the step per stage:")
    print(f"  {'stage':18s}" + "".join(f"{arm:>9s}" for arm in ARMS))
    for stage in STAGES:
        print(f"  {stage:18s}" + "".join(f"{fractions[arm][stage]:9.1%}" for arm in ARMS))
    clock = "wall" if torch.cuda.is_available() else "CPU"
    print(f"  {f'median step ({clock} s)':18s}" + "".join(f"{medians[arm]:9.2f}" for arm in ARMS))
    hooks = fractions["on"]["full-weight"]
    ratio = medians["off"] / medians["plain"]
    prof = max(fractions["off"]["profiler"], fractions["on"]["profiler"])
    print(f"full-weight hooks: {hooks:.1%} of a step with the signal on (target <= {TARGETS['hooks']:.0%}); "
          f"signal on / off step: {medians['on'] / medians['off']:.3f}x")
    if kept[0]:
        print(f"full-weight products ran on {kept[1] / kept[0]:.1%} of the batch's rows (a group's shared "
              "prompt merged)")
    print(f"grpo-rank step, signal off / plain TRL+PEFT step: {ratio:.3f}x (target <= {TARGETS['off_vs_plain']}x)")
    print(f"profiler callback: {prof:.3%} of a step (target <= {TARGETS['profiler']:.0%})")


def main(argv: list[str]) -> None:
    opts = {"steps": 3, "repeats": 3}  # 3: every arm once in each position
    overrides = []
    for a in argv:
        k, _, v = a.partition("=")
        if k in opts:
            opts[k] = int(v)
        else:
            overrides.append(a)
    rows, model, kept = run_arms(overrides, opts["steps"], opts["repeats"])
    report(rows, model, opts["steps"], opts["repeats"], kept)


if __name__ == "__main__":
    main(sys.argv[1:])
