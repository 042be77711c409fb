"""`strategy=adalora`: PEFT's AdaLoRA as dynamic rank allocation during training, wired into TRL by a
callback (no trainer subclass).

    python -m grpo_rank.run -m strategy=uniform,adalora seed=0,1,2
    python -m grpo_rank.run strategy=adalora adalora.init_r=16 adalora.orth_reg_weight=0.1

AdaLoRA needs two things from the training loop that no TRL trainer does: its orthogonal regulariser
added to the loss (PEFT adds it to `outputs.loss`, which TRL's GRPO loss ignores; GRPO passes no labels,
so it is not even computed), and `update_and_allocate` after every optimizer step, which scores every
singular triplet and masks the least important down to the budget. Without them a run trains plain
LoRA at a fixed rank. `AdaLoraSchedule` does both:
- `on_pre_optimizer_step` (after the profiler, before the clip) adds the gradient of
  orth_reg_weight * mean_m ||P_m P_m^T - I||_F (P = each A, and each B transposed), as PEFT's forward
  would have added the term to the loss once per optimizer step: the clip and the optimizer see it, the
  gradient records hold the GRPO loss's gradient alone, and the regulariser's value and gradient norm go
  to the train log apart (`adalora/orth_reg`, `adalora/orth_reg_grad_norm`, mean over the logged steps);
- `on_optimizer_step` (after the update, before the gradients are zeroed) calls `update_and_allocate`
  with the step just taken (1-based, as the gradient records count steps). The mask it returns is kept
  by the callback while training and put into the adapter's config at the end (see `__init__`).

Budget: every module starts at `adalora.init_r`; the final total rank over all modules is each layer's rank in
the arm's budget on every targeted module of that layer (the sites, allocation/sites.py), i.e. `lora.r` per
module on average at the full budget (896 per projection for the paper, 6,272 in all). PEFT derives that
target from an integer `target_r`; we set the allocator's target to the exact total, so reduced budgets are
met exactly too. The rank of a module at a step is the number of its triplets left unmasked by the last
allocation; the gradient records' `rank` column carries it per step (the rank trajectory), and the job
record's `adaptive` part the final ranks. Scaling is PEFT's alpha / init_r for every module whatever its
current rank, so only `lora.alpha_mode=fixed` applies. PEFT computes B diag(E) A with E = 0 and A, B ~ N(0,
0.02^2) at initialisation, so the first step's A and B gradients are 0 (only E has one). The allocator's
state (importance averages, mask) is saved with each checkpoint and restored on resume.

Budget rule: PEFT masks the starting total (init_r on every module) down to the target; a start that does
not exceed the target leaves nothing to mask (torch.kthvalue with k = 0 mid-training), so config
validation and preflight refuse it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import TrainerCallback

from grpo_rank.allocation.lora import Site
from grpo_rank.config.schema import RunConfig
from grpo_rank.record.result import AdaptiveInfo

STATE = "adalora_state.pt"
E_PARAM_RE = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_E\.default$")


def init_rank(cfg: RunConfig) -> int:
    """Every module's starting rank: `adalora.init_r`, or 3/2 of lora.r rounded up (PEFT's 12 for 8)."""
    return cfg.adalora.init_r or math.ceil(1.5 * cfg.lora.r)


def schedule(cfg: RunConfig, steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in steps: the warm-up before any masking and the final steps at the final ranks."""
    a = cfg.adalora
    return int(a.warmup_fraction * steps), int(a.final_fraction * steps)


def target_total(sites: Sequence[Site], ranks: Sequence[int]) -> int:
    """The budget the module ranks end on: the arm's per-layer ranks, on every targeted module of the layer."""
    return sum(int(ranks[s.layer]) for s in sites)


def adalora_config(sites: Sequence[Site], cfg: RunConfig, steps: int):
    from peft import AdaLoraConfig

    init_r = init_rank(cfg)
    tinit, tfinal = schedule(cfg, steps)
    return AdaLoraConfig(
        init_r=init_r,
        target_r=cfg.lora.r,  # replaced by the exact total in AdaLoraSchedule.on_train_begin
        tinit=tinit, tfinal=tfinal, deltaT=cfg.adalora.delta_t, total_step=steps,
        beta1=cfg.adalora.beta1, beta2=cfg.adalora.beta2, orth_reg_weight=cfg.adalora.orth_reg_weight,
        lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=[s.name for s in sites], fan_in_fan_out=all(s.transposed for s in sites),  # GPT-2's Conv1D
        bias="none", task_type="CAUSAL_LM",
    )


def planned_params(sites: Sequence[Site], cfg: RunConfig) -> int:
    """What PEFT builds: A and B at init_r, and init_r singular values E, on every targeted module."""
    return sum(init_rank(cfg) * (s.per_rank + 1) for s in sites)


def _adalora_model(model):
    """The AdaLoraModel inside a PeftModel (the tuner that owns the rank allocator)."""
    inner = getattr(model, "base_model", model)
    if not hasattr(inner, "update_and_allocate"):
        raise TypeError("strategy=adalora: the trained model holds no AdaLoRA tuner (PEFT built another one)")
    return inner


def module_ranks(model, pattern: dict | None = None) -> dict[str, int]:
    """{base module path: current rank} of every AdaLoRA module: the triplets the last mask (`pattern`, by
    default the one in the model's config) kept, or init_r before the first allocation."""
    tuner = _adalora_model(model)
    pattern = (pattern if pattern is not None else tuner.peft_config["default"].rank_pattern) or {}
    kept = {}
    for name, mask in pattern.items():
        m = E_PARAM_RE.match(name)
        if m:
            kept[m.group(1).removeprefix("base_model.model.")] = int(sum(bool(v) for v in mask))
    out = {}
    for name, module in tuner.model.named_modules():
        if hasattr(module, "lora_E") and "default" in getattr(module, "r", {}):
            out[name] = kept.get(name, int(module.r["default"]))
    return out


def lora_matrices(model) -> list[torch.nn.Parameter]:
    """The trainable A and B matrices of the adapter (not E): what the orthogonal regulariser acts on."""
    return [p for name, p in model.named_parameters()
            if p.requires_grad and (".lora_A.default" in name or ".lora_B.default" in name) and p.dim() == 2]


def orthogonal_penalty(model) -> torch.Tensor:
    """PEFT's regulariser: the mean over A and B matrices of ||P P^T - I||_F (A: P = A, B: P = B^T)."""
    terms = []
    for name, p in model.named_parameters():
        if p.requires_grad and (".lora_A.default" in name or ".lora_B.default" in name):
            cov = p @ p.T if ".lora_A." in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)))
    return torch.stack(terms).mean()


class AdaLoraSchedule(TrainerCallback):
    """The two calls AdaLoRA needs from the training loop (see module docstring), and its budget."""

    def __init__(self, cfg: RunConfig, target_total: int, resume: Path | None = None):
        self.weight = cfg.adalora.orth_reg_weight
        self.target_total = target_total
        self.resume = resume
        self.model = None
        # The mask lives here, not in the PEFT config, while training: PEFT saves an AdaLoRA adapter cut
        # down to the rank pattern in its config, and a checkpoint saved that way cannot be loaded back
        # into the full-size modules a resumed run trains (nor match its optimizer state).
        self.pattern: dict | None = None
        self.logged: list[tuple[float, float]] = []  # (penalty, its weighted gradient's norm) per step since the last log

    def ranks_now(self) -> dict[str, int]:
        return module_ranks(self.model, self.pattern or {})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        tuner = _adalora_model(model)
        tuner.rankallocator.target_bgt = self.target_total  # exact, also where target_r * modules is not
        if self.resume is not None and (self.resume / STATE).is_file():
            self._load(tuner, self.resume / STATE)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.weight <= 0:
            return
        params = lora_matrices(self.model)
        with torch.enable_grad():
            penalty = orthogonal_penalty(self.model)
            grads = torch.autograd.grad(self.weight * penalty, params)
        for p, g in zip(params, grads):
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self.logged.append((float(penalty.detach()), float(norm)))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # before the log sink in the callback list: the row it writes carries these
        if logs is None or "train_runtime" in logs or not self.logged:
            return
        logs["adalora/orth_reg"] = sum(v for v, _ in self.logged) / len(self.logged)
        logs["adalora/orth_reg_grad_norm"] = sum(n for _, n in self.logged) / len(self.logged)
        self.logged.clear()

    def on_optimizer_step(self, args, state, control, **kwargs):
        tuner = _adalora_model(self.model)
        config = tuner.peft_config["default"]
        config.rank_pattern = self.pattern  # the final phase masks by it
        tuner.update_and_allocate(state.global_step + 1)
        self.pattern, config.rank_pattern = config.rank_pattern, None

    def on_train_end(self, args, state, control, **kwargs):
        # the trained adapter carries its final ranks, as PEFT's own AdaLoRA training leaves it
        _adalora_model(self.model).peft_config["default"].rank_pattern = self.pattern

    def on_save(self, args, state, control, **kwargs):
        tuner = _adalora_model(self.model)
        alloc = tuner.rankallocator
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        torch.save({"ipt": alloc.ipt, "exp_avg_ipt": alloc.exp_avg_ipt, "exp_avg_unc": alloc.exp_avg_unc,
                    "rank_pattern": self.pattern}, folder / STATE)

    def _load(self, tuner, path: Path) -> None:
        saved = torch.load(path, weights_only=True)
        alloc = tuner.rankallocator
        alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc = saved["ipt"], saved["exp_avg_ipt"], saved["exp_avg_unc"]
        self.pattern = saved["rank_pattern"]


def adaptive_info(model, cfg: RunConfig, sites: Sequence[Site], target_total: int) -> AdaptiveInfo:
    """The final ranks after training: per module type and layer (0 where a layer has no such module), per
    layer (mean over its modules), and their total."""
    ranks = module_ranks(model)
    n_layers = max(s.layer for s in sites) + 1
    by_module = {s.proj: [0] * n_layers for s in sites}
    per_layer = [[] for _ in range(n_layers)]
    for s in sites:
        by_module[s.proj][s.layer] = ranks.get(s.name, 0)
        per_layer[s.layer].append(ranks.get(s.name, 0))
    tinit, tfinal = schedule(cfg, cfg.grpo.steps)
    return AdaptiveInfo(
        init_r=init_rank(cfg), target_total=target_total, final_total=sum(ranks.values()),
        final_layer_ranks=[sum(r) / len(r) for r in per_layer], final_module_ranks=by_module,
        final_params=sum(ranks.get(s.name, 0) * (s.per_rank + 1) for s in sites),
        tinit=tinit, tfinal=tfinal, delta_t=cfg.adalora.delta_t, orth_reg_weight=cfg.adalora.orth_reg_weight)
