"""Per-reward gradient decomposition (`profile.per_reward=true`): which layers each reward drives.

    python -m grpo_rank.run strategy=proportional profile.per_reward=true
    python -m grpo_rank.run -m experiment=cpu_study strategy=uniform profile.per_reward=true seed=0,1,2

Definition (exact by construction). TRL's GRPO advantage of completion i in group g, for rewards
r_k with weights w_k, summed then normalised (TRL's default aggregation), is
    A_i = sum_k w_k (r_ki - mean_g r_k) / s_g,   s_g = std_g(sum_k w_k r_k) + 1e-4  (1 without std scaling).
So A_i = sum_k A_ki with A_ki = w_k (r_ki - mean_g r_k) / s_g: reward k's share of the advantage, the
group's scale being the combined reward's, as in training. The loss, at the step's parameters
(one GRPO iteration per generation, so the importance ratio is 1 and no clip binds; vLLM's correction
aside, below), is linear in the advantages plus the KL term that does not depend on them:
L(A) = L_pg(A) + beta * KL. Hence
    grad L = sum_k grad L_pg(A_k) + grad(beta * KL),
and the per-reward gradients G_k = grad L(A_k) - grad L(0) (the weight is inside A_k) and the KL gradient
G_kl = grad L(0) add up to the step's gradient exactly. Each is computed on the step's own micro-batches
with TRL's own loss (`compute_loss`), in extra passes that touch neither `.grad` nor the live RNG; the
per-module norms of every G_k (and of G_kl when beta > 0) are recorded per step in
`reward_grads.parquet` (the gradient records' columns plus `reward`), and the largest relative
residual ||G - sum_k G_k - G_kl|| / ||G|| over the steps in the job record (TrainInfo.reward_split_residual).

Replayed randomness: each extra pass of a micro-batch starts from the random state (the CPU generator's
and every CUDA device's) its original forward started from, captured by a wrapper around the trainer's
`compute_loss`, so LoRA dropout draws the very masks the step drew and the identity holds with dropout on;
the live state is put back afterwards, so turning the split on changes nothing the job computes. Where the
loss is not linear in the advantages even so (vLLM generation with TRL's importance-sampling correction
and dropout > 0: the clipped ratio against log-probs taken under other masks), config validation refuses
the split. A step whose relative residual exceeds `profile.per_reward_tolerance` stops the job
(`InexactSplit`) instead of recording an inexact split.

Cost: one forward and backward pass per reward (and one for the KL part) per micro-batch and step.
The step's micro-batches are the ones the loss saw, and each completion's reward shares travel in them:
`attach` wraps the trainer's `_generate_and_score_completions` so its output carries a `reward_advantages`
column, shuffled and split with the rest; the sum of the shares is checked against TRL's own advantages
every step, so a TRL whose advantage changes meaning fails loudly instead of recording something else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from grpo_rank.record.files import GRAD_COLUMNS

KL = "kl"  # the `reward` value of the KL term's gradient rows
COLUMN = "reward_advantages"
STATE = "reward_grads_so_far.npz"  # the rows so far, saved with each checkpoint (checkpoint.py) and restored


def component_advantages(rewards: torch.Tensor, weights: Sequence[float], num_generations: int,
                         scale_rewards: str) -> torch.Tensor:
    """(B, K) per-reward shares A_ki of the advantage, for B completions in groups of `num_generations`
    (consecutive, as TRL generates them) and K reward functions; their row sums are TRL's advantages."""
    from trl.trainer.utils import nanstd  # TRL's own std, so the scale is exactly the one it trains with

    w = torch.as_tensor(list(weights), dtype=rewards.dtype, device=rewards.device)
    weighted = rewards * w
    grouped = weighted.view(-1, num_generations, weighted.shape[1])
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view_as(weighted)
    if scale_rewards == "none":
        return centred
    combined = weighted.sum(dim=1)
    if scale_rewards == "group":
        std = nanstd(combined.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    else:  # "batch"
        std = nanstd(combined).expand_as(combined)
    return centred / (std + 1e-4).unsqueeze(1)


class RewardRecorder:
    """The reward functions, wrapped to keep each call's per-completion rewards (generation order)."""

    def __init__(self, funcs: Sequence[Callable]):
        self.last: list[list[float] | None] = [None] * len(funcs)
        self.funcs = [self._wrap(i, f) for i, f in enumerate(funcs)]
        self.names = [f.__name__ for f in funcs]

    def _wrap(self, i: int, fn: Callable) -> Callable:
        @functools.wraps(fn)  # TRL names its reward columns by __name__
        def recorded(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.last[i] = [float(v) for v in out]
            return out
        return recorded

    def rewards(self) -> torch.Tensor:
        return torch.tensor(self.last, dtype=torch.float32).T  # (B, K)


def attach(trainer, recorder: RewardRecorder, weights: Sequence[float], num_generations: int,
           scale_rewards: str) -> None:
    """Make the trainer's generation output carry each completion's reward shares (module docstring)."""
    generate = trainer._generate_and_score_completions

    def with_shares(batch):
        out = generate(batch)
        shares = component_advantages(recorder.rewards(), weights, num_generations, scale_rewards)
        shares = shares.to(device=out["advantages"].device, dtype=out["advantages"].dtype)
        gap = float((shares.sum(dim=1) - out["advantages"]).abs().max())
        if gap > 1e-4 * max(1.0, float(out["advantages"].abs().max())):
            raise RuntimeError(f"per-reward advantages do not add up to TRL's (max gap {gap:.3g}): this TRL "
                               "computes advantages another way; run without profile.per_reward")
        out[COLUMN] = shares
        return out

    trainer._generate_and_score_completions = with_shares


class InexactSplit(RuntimeError):
    """The per-reward gradients of a step do not add up to its gradient within the tolerance."""


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The random streams a forward pass draws dropout masks from: the CPU generator's, and every CUDA
    device's once CUDA is in use."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class RewardGradients(TrainerCallback):
    """At every optimizer step, the per-module gradient norms of each reward's share of the loss (and of
    the KL term), from the step's micro-batches replayed with their own random state; first in the
    callback list, so `.grad` is the loss's own."""

    def __init__(self, names: Sequence[str], with_kl: bool, phase: str, tolerance: float = 1e-4):
        self.names, self.with_kl, self.phase, self.tolerance = list(names), with_kl, phase, tolerance
        self.trainer = None
        self.params: list[torch.nn.Parameter] = []
        self.meta: list = []
        self.rows: list[tuple[int, str, np.ndarray, np.ndarray]] = []  # (step, reward, norms, ranks)
        self.residual = 0.0
        self.last_components: dict[str, list[torch.Tensor]] = {}  # the last step's gradients, for tests
        # this step's micro-batches as the loss saw them: (model, inputs, args, kwargs, random state before it)
        self.seen: list[tuple] = []
        self._compute_loss: Callable | None = None  # the trainer's own, unwrapped

    def bind(self, trainer, params, meta, full_weight=None) -> None:
        """`full_weight`: the profiler's FullWeightGrads, paused during the extra passes. Wraps the
        trainer's `compute_loss` to keep each micro-batch and the random state its forward starts from."""
        self.trainer, self.params, self.meta, self.full_weight = trainer, params, meta, full_weight
        self._compute_loss = compute_loss = trainer.compute_loss

        @functools.wraps(compute_loss)
        def recorded(model, inputs, *args, **kwargs):
            if model.training and torch.is_grad_enabled():  # a training micro-batch, not an evaluation
                self.seen.append((model, inputs, args, kwargs, rng_state()))
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = recorded

    def _grads(self, advantage_of: Callable) -> list[torch.Tensor]:
        t = self.trainer
        total = [torch.zeros_like(p) for p in self.params]
        for model, batch, args, kwargs, state in self.seen:
            inputs = {**batch, "advantages": advantage_of(batch)}
            set_rng_state(state)  # the dropout masks of the micro-batch's own forward
            with torch.enable_grad(), t.compute_loss_context_manager():
                loss = self._compute_loss(model, inputs, *args, **kwargs)
            for acc, g in zip(total, torch.autograd.grad(loss, self.params, allow_unused=True)):
                if g is not None:
                    acc.add_(g)
        return total

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        t = self.trainer
        if len(self.seen) != args.gradient_accumulation_steps or args.num_iterations != 1:
            raise RuntimeError(f"profile.per_reward needs one generation batch of grpo.grad_accum micro-batches per "
                               f"optimizer step and one GRPO iteration per generation (TRL's defaults); this step ran "
                               f"{len(self.seen)} micro-batches with num_iterations={args.num_iterations}")
        logged = {k: len(v) for k, v in t._metrics["train"].items()}
        quiet = self.full_weight.paused() if self.full_weight is not None else nullcontext()
        live = rng_state()
        try:  # the extra passes must move neither the run's random streams nor the frozen weights' gradient sums
            with quiet:
                base = self._grads(lambda b: torch.zeros_like(b["advantages"]))  # the KL term alone
                parts = {name: [g - g0 for g, g0 in zip(self._grads(lambda b, k=k: b[COLUMN][:, k]), base)]
                         for k, name in enumerate(self.names)}
        finally:
            set_rng_state(live)
            self.seen.clear()
        # TRL's loss logs its metrics (KL, clip ratios, entropy) on every call: the extra calls must not count
        for key in list(t._metrics["train"]):
            if key in logged:
                del t._metrics["train"][key][logged[key]:]
            else:
                del t._metrics["train"][key]
        if self.with_kl:
            parts[KL] = base
        step = state.global_step + 1
        self._check(step, parts, base)
        ranks = np.array([m.rank for m in self.meta], dtype=np.int16)
        for name, grads in parts.items():
            norms = torch.stack(torch._foreach_norm(grads)).float().cpu().numpy()
            self.rows.append((step, name, norms, ranks))
        self.last_components = parts

    def _check(self, step: int, parts: dict[str, list[torch.Tensor]], base: list[torch.Tensor]) -> None:
        """The step's relative residual ||G - sum_k G_k - G_kl|| / ||G||; InexactSplit above the tolerance."""
        actual = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        rebuilt = [sum(parts[n][i] for n in self.names) + base[i] for i in range(len(self.params))]
        num = torch.sqrt(sum(((a - r) ** 2).sum() for a, r in zip(actual, rebuilt)))
        den = torch.sqrt(sum((a ** 2).sum() for a in actual))
        residual = float(num / den) if float(den) > 0 else float(num)
        self.residual = max(self.residual, residual)
        if not residual <= self.tolerance:  # NaN fails too
            raise InexactSplit(
                f"profile.per_reward: at {self.phase} step {step} the per-reward gradients add up to the step's "
                f"gradient only within a relative residual of {residual:.3g} (profile.per_reward_tolerance="
                f"{self.tolerance:g}); the split is not exact here: run without profile.per_reward, or raise the "
                "tolerance if this is rounding (bf16)")

    def on_save(self, args, state, control, **kwargs):
        # before checkpoint.SaveRecords marks the checkpoint complete: this callback comes first in the list
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        rows = self.rows
        np.savez(folder / STATE, steps=np.array([r[0] for r in rows], dtype=np.int64),
                 names=np.array([r[1] for r in rows]), residual=np.array(self.residual),
                 norms=np.stack([r[2] for r in rows]) if rows else np.zeros((0, 0)),
                 ranks=np.stack([r[3] for r in rows]) if rows else np.zeros((0, 0), dtype=np.int16))

    def restore(self, folder: Path) -> None:
        """The rows a resumed phase had recorded up to its checkpoint."""
        if not (folder / STATE).is_file():
            return
        with np.load(folder / STATE) as saved:
            self.rows = [(int(s), str(n), norms, ranks) for s, n, norms, ranks in
                         zip(saved["steps"], saved["names"], saved["norms"], saved["ranks"])]
            self.residual = float(saved["residual"])

    def columns(self) -> dict[str, np.ndarray]:
        """The gradient records' columns plus `reward`, one row per (step, reward, LoRA matrix)."""
        if not self.rows:
            return {c: np.array([]) for c in (*GRAD_COLUMNS, "reward")}
        n = len(self.meta)
        return {
            "phase": np.full(n * len(self.rows), self.phase),
            "step": np.repeat(np.array([r[0] for r in self.rows], dtype=np.int32), n),
            "layer": np.tile(np.array([m.layer for m in self.meta], dtype=np.int16), len(self.rows)),
            "module": np.tile(np.array([m.module for m in self.meta]), len(self.rows)),
            "matrix": np.tile(np.array([m.matrix for m in self.meta]), len(self.rows)),
            "norm": np.concatenate([r[2] for r in self.rows]).astype(np.float32),
            "rank": np.concatenate([r[3] for r in self.rows]),
            "scaling": np.tile(np.array([m.scaling for m in self.meta], dtype=np.float32), len(self.rows)),
            "reward": np.repeat(np.array([r[1] for r in self.rows]), n),
        }
