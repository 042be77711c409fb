"""The gradient-norm profiler: per-adapter LoRA gradient norms at every optimizer step, before
clipping, as trainer callbacks (no trainer subclass).

transformers clips gradients before `on_pre_optimizer_step` and zeroes them before `on_step_end`, so
no callback sees unclipped gradients while the trainer clips. We therefore set the trainer's own
`max_grad_norm` to 0 and append `ClipGradients` after `GradNormProfiler` in the callback list: the
profiler reads the raw gradients, then the clipper applies the configured clip, so the optimizer sees
exactly what it would have seen (the trainer still logs the pre-clip total norm).

Norms are computed on the device in one batched call (`torch._foreach_norm`) and stacked; the host
copy happens once per step, not once per parameter.

With `full_weight=True` the same rows also hold ||dL/dW|| of every targeted frozen projection W
(matrix "W"): the rank- and alpha-independent signal of `profile.signal=full_weight`, computed by
fullweight.FullWeightGrads (how, and what it costs, is said there).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import TrainerCallback

from grpo_rank.allocation.importance import step_norms
from grpo_rank.allocation.lora import Site
from grpo_rank.record.files import GRAD_COLUMNS
from grpo_rank.runtime import distributed
from grpo_rank.training.fullweight import FullWeightGrads

# LoRA's A and B are Linear modules (`.weight`); AdaLoRA's are bare parameters of a ParameterDict
PARAM_RE = re.compile(r"^(.*)\.lora_([AB])\.default(?:\.weight)?$")


@dataclass(frozen=True)
class Adapter:
    layer: int
    module: str
    matrix: str  # "A" or "B"
    rank: int
    scaling: float
    path: str = ""  # the module's path in the base model (lora.Site.name)


def lora_adapters(model, sites: Sequence[Site]) -> tuple[list[torch.nn.Parameter], list[Adapter],
                                                         list[torch.nn.Module]]:
    """The trainable LoRA matrices of a PEFT model on `sites` (lora.sites_for: the one place module paths
    are read), with their site's layer and type and their module's rank/scaling, and the LoRA layer each
    belongs to."""
    modules = dict(model.named_modules())
    by_name = {s.name: s for s in sites}
    params, meta, owners = [], [], []
    for name, p in model.named_parameters():
        m = PARAM_RE.match(name)
        if not (m and p.requires_grad):
            continue
        site = by_name.get(m.group(1).removeprefix("base_model.model."))
        if site is None:
            continue
        lora_layer = modules[m.group(1)]
        params.append(p)
        owners.append(lora_layer)
        scaling = float(lora_layer.scaling["default"])
        if hasattr(lora_layer, "ranknum"):  # AdaLoRA divides by its initial rank in the forward pass
            scaling /= float(lora_layer.ranknum["default"])
        meta.append(Adapter(site.layer, site.proj, m.group(2), int(lora_layer.r["default"]), scaling, site.name))
    return params, meta, owners


class GradNormProfiler(TrainerCallback):
    """Records ||grad|| of every LoRA A and B matrix at every optimizer step, and with `full_weight`
    the gradient norm of each frozen projection under them (matrix "W").

    `on_step` (optional) receives (step, layer_norms, module_norms) once per step, for streaming; those
    are the LoRA signal's, as in the study. `ranks_now` (optional, strategy=adalora) returns {module path:
    current rank}; each step's rows then carry the rank in effect at that step, not the built one.
    """

    def __init__(self, phase: str = "train", sites: Sequence[Site] = (), on_step: Callable | None = None,
                 full_weight: bool = False, ranks_now: Callable[[], dict[str, int]] | None = None):
        self.phase = phase
        self.sites = list(sites)  # where the LoRA layers are (lora.sites_for on the base model)
        self.on_step = on_step
        self.ranks_now = ranks_now
        self.rank_rows: list[np.ndarray] = []  # per step, with ranks_now
        self.full_weight = FullWeightGrads() if full_weight else None
        self.params: list[torch.nn.Parameter] = []
        self.meta: list[Adapter] = []
        self._pending: list[tuple[int, torch.Tensor, np.ndarray | None]] = []
        self.steps: list[int] = []
        self.norms: list[np.ndarray] = []
        self.seconds = 0.0  # wall time spent in this callback: its overhead, reported by `make bench`

    def attach(self, model) -> None:
        self.params, self.meta, self.owners = lora_adapters(model, self.sites)
        if not self.params:
            raise RuntimeError("GradNormProfiler found no trainable LoRA parameters in the model")
        self.n_lora = len(self.meta)
        if self.full_weight is not None:
            # one W per LoRA layer; its B matrix's entry carries the layer's place, rank and scaling
            owners = [(m, a) for m, a in zip(self.owners, self.meta) if a.matrix == "B"]
            self.full_weight.attach([m for m, _ in owners])
            self.meta = self.meta + [Adapter(a.layer, a.module, "W", a.rank, a.scaling, a.path) for _, a in owners]
        self._layer = np.array([a.layer for a in self.meta])
        self._module = np.array([a.module for a in self.meta])
        self._types, self._module_idx = np.unique(self._module, return_inverse=True)
        self._n_layers = int(self._layer.max()) + 1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.params and model is not None:
            self.attach(model)
        if self.full_weight is not None:
            # one backward per optimizer step in one process: each norm is taken in the backward, no buffer
            self.full_weight.buffered = args.gradient_accumulation_steps > 1 or distributed.world_size() > 1

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        t = time.perf_counter()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norms = torch.stack(torch._foreach_norm(grads)).float()  # one kernel launch group, stays on device
        if self.full_weight is not None:
            norms = torch.cat([norms, self.full_weight.norms(norms)])
        ranks = None
        if self.ranks_now is not None:
            now = self.ranks_now()
            ranks = np.array([now.get(a.path, a.rank) for a in self.meta], dtype=np.int16)
        self._pending.append((state.global_step + 1, norms, ranks))
        self.seconds += time.perf_counter() - t

    def on_step_end(self, args, state, control, **kwargs):
        t = time.perf_counter()
        self.flush()
        self.seconds += time.perf_counter() - t

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()
        if self.full_weight is not None:
            self.full_weight.detach()

    def flush(self) -> None:
        if not self._pending:
            return
        host = torch.stack([n for _, n, _ in self._pending]).cpu().numpy()  # the one host sync
        for (step, _, ranks), row in zip(self._pending, host):
            self.steps.append(step)
            self.norms.append(row)
            if ranks is not None:
                self.rank_rows.append(ranks)
            if self.on_step is not None:
                self.on_step(step, *self.aggregate(row), **({"layer_ranks": self.layer_ranks(ranks)}
                                                            if ranks is not None else {}))
        self._pending.clear()

    def aggregate(self, row: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Per-layer sum of module norms sqrt(A^2 + B^2), and the summed norm per projection type (LoRA rows)."""
        n = self.n_lora
        layer, by_type = step_norms(row[:n], self._layer[:n], self._module_idx[:n], self._n_layers, len(self._types))
        return layer, {str(t): float(v) for t, v in zip(self._types, by_type)}

    def layer_ranks(self, ranks: np.ndarray) -> np.ndarray:
        """Per layer, the mean current rank of its LoRA modules (one B row each)."""
        b = np.array([a.matrix == "B" for a in self.meta])
        total = np.bincount(self._layer[b], weights=ranks[b], minlength=self._n_layers)
        return total / np.maximum(np.bincount(self._layer[b], minlength=self._n_layers), 1)

    def columns(self) -> dict[str, np.ndarray]:
        """The long, columnar form written to grad_norms.parquet."""
        n_steps, n_ad = len(self.steps), len(self.meta)
        if n_steps == 0:
            return {c: np.array([]) for c in GRAD_COLUMNS}
        return {
            "phase": np.full(n_steps * n_ad, self.phase),
            "step": np.repeat(np.asarray(self.steps, dtype=np.int32), n_ad),
            "layer": np.tile(self._layer.astype(np.int16), n_steps),
            "module": np.tile(self._module, n_steps),
            "matrix": np.tile(np.array([a.matrix for a in self.meta]), n_steps),
            "norm": np.concatenate(self.norms).astype(np.float32),
            "rank": (np.concatenate(self.rank_rows) if len(self.rank_rows) == n_steps
                     else np.tile(np.array([a.rank for a in self.meta], dtype=np.int16), n_steps)),
            "scaling": np.tile(np.array([a.scaling for a in self.meta], dtype=np.float32), n_steps),
        }


class ClipGradients(TrainerCallback):
    """The trainer's gradient clip, moved after the profiler (see module docstring)."""

    def __init__(self, max_norm: float, accelerator=None, model=None):
        self.max_norm = max_norm
        self.accelerator = accelerator
        self.model = model

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.max_norm <= 0:
            return
        params = [p for p in (self.model or model).parameters() if p.requires_grad]
        if self.accelerator is not None:
            self.accelerator.clip_grad_norm_(params, self.max_norm)  # unscales fp16 grads, handles FSDP
        else:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)
