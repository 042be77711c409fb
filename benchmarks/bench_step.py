"""Benchmarks, printed as ratios measured in one run (speed drifts ~50% between runs here, so only
ratios taken side by side mean anything):

1. profiler overhead: time spent in the profiler's callbacks / the GRPO step time (target <= 1%);
2. a grpo-rank training step / a plain TRL GRPOTrainer + PEFT step with the same settings, same seed,
   hence the same generations (target <= 1.03x).

    python -m benchmarks.bench_step                       # SmolLM2-135M, the default demo settings (~6 min)
    python -m benchmarks.bench_step model=tiny steps=3    # seconds, for a smoke check
    make bench ARGS="repeats=3"

Arguments are `key=value`: any config override (as for grpo_rank.run) plus steps=N and repeats=N.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from peft import LoraConfig
from transformers import TrainerCallback, set_seed
from trl import GRPOTrainer

from grpo_rank.allocation import lora
from grpo_rank.config.schema import to_typed, validate
from grpo_rank.data import models
from grpo_rank.data.tasks import load_split, prompt_dataset
from grpo_rank.training.train import grpo_args, reward_functions, train


class StepTimer(TrainerCallback):
    def __init__(self):
        self.t0, self.times = None, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.t0)


def _compose(overrides: list[str]):
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = to_typed(compose(config_name="config", overrides=overrides))
    validate(cfg)
    return cfg


def plain_trl_step_times(cfg, model, tok, data, steps: int, out: Path) -> list[float]:
    """The reference: TRL + PEFT as a user would script it, no grpo-rank code in the loop."""
    args = grpo_args(cfg, out, steps)
    args.max_grad_norm = cfg.grpo.max_grad_norm  # the trainer clips, as usual
    timer = StepTimer()
    set_seed(cfg.seed)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_functions(cfg.grpo), args=args,
                          train_dataset=data, processing_class=tok,
                          peft_config=LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 lora_dropout=cfg.lora.dropout,
                                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"),
                          callbacks=[timer])
    trainer.train()
    return timer.times


def ours_step_times(cfg, model, tok, data, steps: int, out: Path) -> tuple[list[float], float]:
    """The real pipeline's train(); the profiler times its own handlers."""
    timer = StepTimer()
    ranks = [cfg.lora.r] * lora.num_layers(lora.sites_for(model, cfg.lora))
    result = train(model, tok, data, ranks, cfg, phase="train", steps=steps, job_dir=out, callbacks=[timer])
    return timer.times, result.profiler_seconds


def main(argv: list[str]) -> None:
    opts = {"steps": 3, "repeats": 2}
    overrides = []
    for a in argv:
        k, _, v = a.partition("=")
        if k in opts:
            opts[k] = int(v)
        else:
            overrides.append(a)
    cfg = _compose(overrides)
    data = prompt_dataset(load_split(cfg.task, "train"), cfg.task.system_prompt, cfg.task.few_shot)
    ours, plain, prof_s, prof_steps = [], [], 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(opts["repeats"]):  # interleaved, so drift hits both arms alike
            for arm in ("plain", "ours"):
                model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
                out = Path(tmp) / f"{arm}{rep}"
                out.mkdir()
                print(f"[bench] repeat {rep + 1}/{opts['repeats']}: {arm}, {opts['steps']} steps", file=sys.stderr)
                if arm == "plain":
                    plain += plain_trl_step_times(cfg, model, tok, data, opts["steps"], out)[1:]  # drop warm-up
                else:
                    times, secs = ours_step_times(cfg, model, tok, data, opts["steps"], out)
                    ours += times[1:]
                    prof_s += secs
                    prof_steps += len(times)
    step = statistics.median(ours)
    print(f"model={cfg.model.name} steps/arm={opts['steps']}x{opts['repeats']} (first step of each dropped)")
    print(f"median step: grpo-rank {step:.3f}s, plain TRL+PEFT {statistics.median(plain):.3f}s")
    print(f"profiler overhead: {prof_s / prof_steps / step:.4%} of a step  (target <= 1%)")
    print(f"grpo-rank / plain TRL step time: {step / statistics.median(plain):.3f}x  (target <= 1.03x)")


if __name__ == "__main__":
    main(sys.argv[1:])
