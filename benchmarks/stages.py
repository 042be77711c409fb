"""Where a GRPO step's time goes: wall time per stage of TRL's GRPOTrainer step, for the step benchmark.

The stages are read by wrapping the trainer's own methods for the duration of a `with StageClock():`
block (benchmark instrumentation only; the pipeline never patches TRL):

    generation        GRPOTrainer._generate (tokenising, model.generate, decoding)
    reference         log-probabilities of the reference model (the adapters disabled), no gradient
    old               log-probabilities of the policy before the step (only when TRL needs them), no gradient
    forward+backward  the training forward and backward, less the full-weight hooks that run inside it
    full-weight       gradnorm.FullWeightGrads's own time (its backward products and norms)
    profiler          GradNormProfiler's callbacks, less the full-weight norms it triggers
    clip+optimizer    from the last micro-batch's backward to the optimizer's step end: the gradient clip
                      (the trainer's or ClipGradients), the trainer's norm log and optimizer.step
    other             the rest of the step (rewards, advantages, logging, callbacks)

On a CPU the clock is this process's CPU time (time.process_time): on a shared machine wall time swings
by 2x from step to step with the other processes' load, the work a stage does does not. On a GPU it is wall
time, and every boundary synchronises the device first, so the times are the kernels' and not their launch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from grpo_rank.training import fullweight
from grpo_rank.training.gradnorm import FullWeightGrads, GradNormProfiler

STAGES = ("generation", "reference", "old", "forward+backward", "full-weight", "profiler", "clip+optimizer", "other")


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    # CPU seconds of this process: the work done, which other processes sharing the cores do not inflate
    return time.process_time()


def _adapters_disabled(model) -> bool:
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "disable_adapters"):
            return bool(module.disable_adapters)
    return False


class StageClock(TrainerCallback):
    """Seconds per stage of every optimizer step. Pass it to the trainer as a callback and train inside
    `with clock.installed():`, which wraps the trainer's, the profiler's and the full-weight signal's methods
    (at class level, so the instances train() builds are timed too) and restores them after."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self._cur: dict[str, float] = defaultdict(float)
        self._t_step = self._t_backward_end = 0.0
        self.rows = [0, 0]  # rows of the full-weight products before and after compact_rows

    def _wrap(self, cls, name: str, stage_of, saved: list) -> None:
        original = getattr(cls, name)
        saved.append((cls, name, original))
        clock = self

        def wrapper(obj, *args, **kwargs):
            t = _now()
            out = original(obj, *args, **kwargs)
            clock._cur[stage_of(args)] += _now() - t
            if name == "training_step":
                clock._t_backward_end = _now()
            return out
        setattr(cls, name, wrapper)

    @contextmanager
    def installed(self):
        saved: list = []

        def logps_stage(args):
            if torch.is_grad_enabled():
                return "forward"
            return "reference" if _adapters_disabled(args[0]) else "old"

        self._wrap(GRPOTrainer, "_generate", lambda a: "generation", saved)
        self._wrap(GRPOTrainer, "_get_per_token_logps_and_entropies", logps_stage, saved)
        self._wrap(GRPOTrainer, "_prepare_inputs", lambda a: "prepare", saved)
        self._wrap(GRPOTrainer, "training_step", lambda a: "training_step", saved)
        self._wrap(GradNormProfiler, "on_pre_optimizer_step", lambda a: "profiler_pre", saved)
        self._wrap(GradNormProfiler, "on_step_end", lambda a: "profiler_end", saved)
        self._wrap(FullWeightGrads, "accumulate" if hasattr(FullWeightGrads, "accumulate") else "_accumulate",
                   lambda a: "fw_backward", saved)
        self._wrap(FullWeightGrads, "norms", lambda a: "fw_norms", saved)
        compact = fullweight.compact_rows

        def counting(g, x, plan=None):
            out = compact(g, x, plan)
            self.rows[0] += g.shape[0]
            self.rows[1] += out[1].shape[0]
            return out
        fullweight.compact_rows = counting
        try:
            yield self
        finally:
            fullweight.compact_rows = compact
            for cls, name, original in reversed(saved):
                setattr(cls, name, original)

    def on_step_begin(self, args, state, control, **kwargs):
        self._cur = defaultdict(float)
        self._t_step = _now()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._cur["window"] = _now() - self._t_backward_end

    def on_step_end(self, args, state, control, **kwargs):
        total = _now() - self._t_step
        c = self._cur
        row = {"generation": c["generation"], "reference": c["reference"], "old": c["old"],
               "forward+backward": c["training_step"] - c["prepare"] - c["fw_backward"],
               "full-weight": c["fw_backward"] + c["fw_norms"],
               # its step-end flush runs before this callback (it comes first in the callback list)
               "profiler": c["profiler_pre"] + c["profiler_end"] - c["fw_norms"],
               "clip+optimizer": max(c["window"] - c["profiler_pre"], 0.0)}
        row["other"] = total - sum(row.values())
        row["step"] = total
        self.steps.append(row)


def median_fractions(rows: list[dict[str, float]]) -> tuple[dict[str, float], float]:
    """Per stage, its summed time over the steps / the summed step time; and the median step time."""
    total = sum(r["step"] for r in rows)
    steps = sorted(r["step"] for r in rows)
    return {s: sum(r[s] for r in rows) / total for s in STAGES}, steps[len(steps) // 2]
