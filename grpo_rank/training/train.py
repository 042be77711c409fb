"""Training with TRL + PEFT, profiled: one call trains one phase (the profiling phase at uniform rank,
or the main run at the allocated ranks) with the job's algorithm (algorithms.py: GRPOTrainer with a
loss type, RLOOTrainer, or SFTTrainer, from TRAINERS) and returns its gradient records.

TRL's defaults that do not fit here are overridden in `common_args` for every trainer: bf16 only on a
GPU that has it, our learning rate (TRL's 1e-6 is too low for LoRA), gradient checkpointing off unless
asked for, no trainer-side clipping (gradnorm.ClipGradients clips after the profiler has read the
gradient), no reporting (we stream to W&B ourselves so the run identity is ours), and checkpoints every
`grpo.save_steps` steps that a relaunch of the same job resumes from (checkpoint.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer

from grpo_rank.allocation import lora
from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.config.schema import GRPOSettings, RunConfig
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.user_rewards import registry
from grpo_rank.profiling.cache import profile_key
from grpo_rank.record.files import COMPLETIONS, TRAIN_LOG, append_jsonl, replace_phase_rows
from grpo_rank.runtime import device, distributed
from grpo_rank.training import adalora, checkpoint, reward_split
from grpo_rank.training.completions import CompletionLog
from grpo_rank.training.gradnorm import ClipGradients, GradNormProfiler

log = logging.getLogger(__name__)


def common_args(cfg: RunConfig, output_dir: Path, steps: int) -> dict:
    """TrainingArguments every algorithm shares: steps, batch, learning rate, precision, checkpoints."""
    g = cfg.grpo
    caps = device.capabilities()
    return dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=g.per_device_batch_size,
        gradient_accumulation_steps=g.grad_accum,
        learning_rate=g.learning_rate,
        max_grad_norm=0.0,  # clipping happens in ClipGradients, after the profiler has read the raw grads
        bf16=caps.bf16,
        use_cpu=not caps.cuda,
        gradient_checkpointing=g.gradient_checkpointing,
        logging_steps=g.logging_steps,
        save_strategy="steps" if g.save_steps else "no",
        save_steps=g.save_steps or 500,  # unused when save_strategy is "no"
        save_total_limit=2,  # the newest may be torn by a kill mid-save; the one before is then resumed
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
        # distributed.processes > 1: every LoRA parameter takes part in every forward, so DDP need not search
        ddp_find_unused_parameters=False,
    )


def rl_args(cfg: RunConfig) -> dict:
    """What the reward-driven trainers (GRPO family, RLOO) add: sampling, KL, reward weights, vLLM."""
    g = cfg.grpo
    return dict(
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        beta=g.beta,
        temperature=g.temperature,
        reward_weights=[float(w) for w in g.rewards.values()],  # in the order of reward_functions()
        use_vllm=device.use_vllm(g.use_vllm, device.capabilities()),
        vllm_mode=g.vllm_mode,
    )


def grpo_args(cfg: RunConfig, output_dir: Path, steps: int):
    algo = ALGORITHMS[cfg.algorithm.name]
    return GRPOConfig(**common_args(cfg, output_dir, steps), **rl_args(cfg), loss_type=algo.loss_type,
                      scale_rewards=algo.scale_rewards)


def _grpo(cfg: RunConfig, output_dir: Path, steps: int, rewards: list, **kw):
    return GRPOTrainer(reward_funcs=rewards, args=grpo_args(cfg, output_dir, steps), **kw)


def _rloo(cfg: RunConfig, output_dir: Path, steps: int, rewards: list, **kw):
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(**common_args(cfg, output_dir, steps), **rl_args(cfg))
    return RLOOTrainer(reward_funcs=rewards, args=args, **kw)


def _sft(cfg: RunConfig, output_dir: Path, steps: int, rewards: list, **kw):  # learns from solutions, not rewards
    from trl import SFTConfig, SFTTrainer

    # the prompt-completion dataset (tasks.solution_dataset) makes the loss the completion tokens' only
    args = SFTConfig(**common_args(cfg, output_dir, steps), completion_only_loss=True)
    return SFTTrainer(args=args, **kw)


# algorithms.Algorithm.trainer -> the TRL trainer it builds, each with the same model, data, LoRA and callbacks
TRAINERS: dict[str, Callable] = {"grpo": _grpo, "rloo": _rloo, "sft": _sft}


def planned_params(cfg: RunConfig, sites: Sequence[lora.Site], ranks: Sequence[int]) -> int:
    """The trainable count PEFT must build on `sites` for the plan `ranks`: at those ranks, or for an adaptive
    strategy (adalora) at its initial rank; 0 without ranks (strategy=none)."""
    if not ranks:
        return 0
    if STRATEGIES[cfg.strategy.name].adaptive:
        return adalora.planned_params(sites, cfg)
    return lora.planned_params(sites, ranks)


def reward_functions(g: GRPOSettings) -> list:
    """The reward functions named in `grpo.rewards` (built-in, or of `grpo.reward_modules`), in its order
    (the weights follow the same order)."""
    funcs = registry(g.rewards, g.reward_modules)
    return [funcs[name] for name in g.rewards]


@dataclass
class TrainOutcome:
    model: object  # the trained PeftModel
    grads: dict[str, np.ndarray]
    built_params: int
    log_rows: list[dict] = field(default_factory=list)
    profiler_seconds: float = 0.0
    resumed_from: int | None = None  # the checkpoint step this phase resumed from, if it did
    reward_grads: dict[str, np.ndarray] | None = None  # profile.per_reward: reward_split.RewardGradients.columns
    reward_residual: float | None = None

    @property
    def nonzero_spread_fraction(self) -> float | None:
        """Fraction of steps where at least one group's rewards differ (TRL's frac_reward_zero_std < 1):
        the steps with any learning signal."""
        vals = [r["frac_reward_zero_std"] for r in self.log_rows if "frac_reward_zero_std" in r]
        return float(np.mean([v < 1.0 for v in vals])) if vals else None


class LogSink:
    """TRL's per-step logs: to train_log.jsonl (the record) and to a streaming callback (W&B)."""

    def __init__(self, path: Path, phase: str, on_log: Callable | None):
        self.path, self.phase, self.on_log, self.rows = path, phase, on_log, []

    def start(self, rows: list[dict]) -> None:
        """The phase begins with `rows` (a checkpoint's, or none): what an earlier attempt logged past
        them is dropped from the file."""
        self.rows[:] = rows
        if distributed.is_main():
            replace_phase_rows(self.path, self.phase, rows)

    def callback(self):
        sink = self

        class _OnLog(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "train_runtime" in logs:  # the end-of-training summary is no step
                    return
                row = {"phase": sink.phase, "step": state.global_step, **logs}
                sink.rows.append(row)
                if not state.is_world_process_zero:  # every rank logs the same gathered metrics
                    return
                append_jsonl(sink.path, row)
                if sink.on_log is not None:
                    sink.on_log(row)

        return _OnLog()


def train(model, tokenizer, dataset, ranks: Sequence[int], cfg: RunConfig, *, phase: str, steps: int,
          job_dir: Path, output_dir: Path | None = None, on_step: Callable | None = None,
          on_log: Callable | None = None, on_completions: Callable | None = None,
          callbacks: Sequence = ()) -> TrainOutcome:
    """Train LoRA at `ranks` for `steps` steps; raises LoraBuildError if PEFT builds another plan. For an
    adaptive strategy (strategy=adalora) `ranks` is the budget the AdaLoRA ranks end on (adalora.py).

    Checkpoints go to `output_dir` (default `<job_dir>/trainer_<phase>`); when it already holds a complete
    checkpoint of this same phase, training resumes from it. Extra `callbacks` run after the profiler and
    before the clip, so they too see the raw gradients of the loss (before AdaLoRA's regulariser). The
    training phase's sampled completions go to completions.jsonl every `tracking.completions_every` steps,
    and to `on_completions(step, columns, rows)`.
    """
    sites = lora.sites_for(model, cfg.lora)
    fingerprint = profile_key(cfg, ranks, steps)  # what determines this phase: a checkpoint of another is no use
    first, regulariser = [], []  # before the profiler: the loss's own gradient; after it, before the clip
    if STRATEGIES[cfg.strategy.name].adaptive:
        built_ranks = [adalora.init_rank(cfg)] * len(ranks)
        peft_config = adalora.adalora_config(sites, cfg, steps)
        # the adalora settings are no part of the profile key, but they decide this phase's checkpoints
        settings = json.dumps(asdict(cfg.adalora), sort_keys=True).encode()
        fingerprint += "-adalora-" + hashlib.sha256(settings).hexdigest()[:12]
    else:
        built_ranks = list(ranks)
        peft_config = lora.lora_config(sites, ranks, cfg.lora)
    profiler = GradNormProfiler(phase=phase, sites=sites, on_step=on_step, full_weight=cfg.profile.full_weight)
    clipper = ClipGradients(cfg.grpo.max_grad_norm)
    logs = LogSink(job_dir / TRAIN_LOG, phase, on_log)
    output_dir = Path(output_dir or job_dir / f"trainer_{phase}")
    resume = checkpoint.latest(output_dir, fingerprint)
    rewards = reward_functions(cfg.grpo)
    splitter = None
    if cfg.profile.per_reward:  # first: it reads the loss's own gradient, before anything adds to it
        recorder = reward_split.RewardRecorder(rewards)
        rewards = recorder.funcs
        splitter = reward_split.RewardGradients(list(cfg.grpo.rewards), cfg.grpo.beta > 0, phase,
                                                  cfg.profile.per_reward_tolerance)
        if resume:
            splitter.restore(resume)
        first.append(splitter)
    watched = None
    if phase == "train" and cfg.tracking.completions_every and ALGORITHMS[cfg.algorithm.name].rewarded:
        watched = CompletionLog(job_dir / COMPLETIONS, cfg.tracking.completions_every, cfg.grpo.rewards, on_completions)
        rewards = watched.wrap(rewards)
    schedule = None
    if STRATEGIES[cfg.strategy.name].adaptive:
        schedule = adalora.AdaLoraSchedule(cfg, adalora.target_total(sites, ranks), resume)
        regulariser.append(schedule)  # its term reaches the clip and the optimizer, not the gradient records
    resumed_from, rows = checkpoint.restore(resume, profiler) if resume else (None, [])
    logs.start(rows)
    if watched is not None:
        watched.start(resumed_from)
    if resume:
        log.info("%s: resuming from %s (step %d of %d)", phase, resume, resumed_from, steps)
    set_seed(cfg.seed)  # TRL wraps the model (random LoRA A init) before the Trainer seeds itself
    trainer = TRAINERS[ALGORITHMS[cfg.algorithm.name].trainer](
        cfg, output_dir, steps, rewards,
        model=model,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        # order matters: the split, profile, what adds to the gradient, clip, then the log sink (AdaLoRA puts
        # its regulariser's values in the log row) and the completions; the records are saved with each checkpoint
        callbacks=[*first, profiler, *callbacks, *regulariser, clipper, logs.callback(),
                   *([watched.callback()] if watched else []),
                   checkpoint.SaveRecords(profiler, logs.rows, fingerprint, phase)],
    )
    clipper.accelerator = trainer.accelerator
    built = lora.verify(trainer.model, sites, built_ranks, planned_params(cfg, sites, ranks))  # before a step
    profiler.attach(trainer.model)
    if schedule is not None:  # the rank each module has at each step: the rank trajectory
        profiler.ranks_now = schedule.ranks_now
    if splitter is not None:
        reward_split.attach(trainer, recorder, [float(w) for w in cfg.grpo.rewards.values()],
                            cfg.grpo.num_generations, ALGORITHMS[cfg.algorithm.name].scale_rewards)
        splitter.bind(trainer, profiler.params, profiler.meta[:profiler.n_lora], profiler.full_weight)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return TrainOutcome(trainer.model, profiler.columns(), built, logs.rows, profiler.seconds, resumed_from,
                        splitter.columns() if splitter else None, splitter.residual if splitter else None)
