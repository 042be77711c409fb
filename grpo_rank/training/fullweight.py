"""The full-weight signal: ||dL/dW|| of the frozen base weight W under every LoRA layer, per optimizer step
(gradnorm.GradNormProfiler records it as matrix "W" when `profile.full_weight` is on).

W stays frozen and out of the optimizer. A forward hook on each LoRA layer passes its output y = W x + LoRA(x)
through `_Tap`, an identity whose backward receives G = dL/dy (= dL/d(Wx)) and the layer's input X, so
dL/dW = G^T X. X is saved the autograd way (`ctx.save_for_backward`): gradient checkpointing frees and
recomputes it like any activation, and without checkpointing it is the tensor LoRA's A already keeps, so the
signal keeps no input alive longer than training itself does.

What it costs, and why it costs no more:
- one (rows x out x in) product per projection and micro-batch, on fewer rows than the batch has: rows of X
  that are bitwise equal (the prompt that a group's completions share: causal attention gives its positions
  the same hidden states in every copy) are merged, their G rows summed: G^T X is the same sum with fewer
  terms, and on GRPO batches the product shrinks by about the prompt's share of the tokens times
  (1 - 1/num_generations). The merge plan is made once per input (q, k and v share theirs, gate and up too).
- one micro-batch per optimizer step and one process (`buffered=False`): the norm is taken in the backward,
  no buffer is kept; else dL/dW is summed over the micro-batches (and averaged over processes, as DDP does
  for the LoRA gradients) in a buffer of the weight's own dtype (float32 under float16 weights, whose range
  a sum of gradients can leave), the size of the targeted weights.

runtime/memory.py estimates what this needs (the device rule in pipeline/preflight.py, the README's figures).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from grpo_rank.runtime import distributed


class _Tap(torch.autograd.Function):
    """Identity on a LoRA layer's output; its backward hands dL/dy and the saved input to the collector."""

    @staticmethod
    def forward(ctx, y, x, collector, i):
        ctx.save_for_backward(x)
        ctx.collector, ctx.i = collector, i
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        ctx.collector.accumulate(ctx.i, x, g)
        return g, None, None, None


_INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_PROBES = 4  # columns whose bit patterns fingerprint a row


def _fingerprint(x: torch.Tensor) -> torch.Tensor:
    """One int64 per row, equal for bitwise-equal rows: a weighted sum of a few columns' bit patterns in exact
    integer arithmetic (a float dot product can round equal rows apart: BLAS treats rows unevenly)."""
    cols = torch.linspace(0, x.shape[1] - 1, min(_PROBES, x.shape[1]), device=x.device).long()
    bits = x.index_select(1, cols).contiguous().view(_INT_OF[x.element_size()]).to(torch.int64)
    weights = torch.tensor([1, 1 << 16, 1 << 32, 1 << 48][:bits.shape[1]], device=x.device, dtype=torch.int64)
    return (bits * weights).sum(dim=1)


@dataclass
class RowPlan:
    """Which rows of an input X are kept (`owners`, one per set of bitwise-equal rows) and how the others'
    gradient rows are added to their owner's, in rounds that never add twice to one row (a fixed order, so
    the sums are the same on every run and device)."""

    owners: torch.Tensor
    rounds: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (rows, their owner's slot)

    def merge(self, g: torch.Tensor) -> torch.Tensor:
        if not self.rounds:
            return g if self.owners.numel() == g.shape[0] else g.index_select(0, self.owners)
        merged = g.index_select(0, self.owners)
        for rows, slots in self.rounds:
            merged.index_add_(0, slots, g.index_select(0, rows))
        return merged


def row_plan(x: torch.Tensor) -> RowPlan:
    """The plan that merges X's bitwise-equal rows; a fingerprint of a few columns finds candidates in one
    pass, and only rows equal to their candidate in every column merge."""
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    if n < 2:
        return RowPlan(rows)
    _, group = torch.unique(_fingerprint(x), return_inverse=True)
    first = torch.full((n,), n, device=x.device, dtype=rows.dtype).scatter_reduce_(0, group, rows, "amin")[group]
    cand = (first != rows).nonzero().squeeze(1)
    if cand.numel() == 0:
        return RowPlan(rows)
    same = (x.index_select(0, cand) == x.index_select(0, first[cand])).all(dim=1)
    others, reps = cand[same], first[cand][same]
    if others.numel() == 0:
        return RowPlan(rows)
    keep = torch.ones(n, device=x.device, dtype=torch.bool)
    keep[others] = False
    owners = keep.nonzero().squeeze(1)
    slot = torch.cumsum(keep, 0) - 1  # an owner's place among the owners
    slots = slot[reps]
    # the k-th repeat of every owner is added in round k
    order = torch.argsort(slots, stable=True)
    others, slots = others[order], slots[order]
    starts = torch.ones_like(slots, dtype=torch.bool)
    starts[1:] = slots[1:] != slots[:-1]
    pos = torch.arange(slots.numel(), device=x.device)
    rank = pos - torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=0).values
    rounds = [(others[rank == k], slots[rank == k]) for k in range(int(rank.max()) + 1)]
    return RowPlan(owners, rounds)


def compact_rows(g: torch.Tensor, x: torch.Tensor, plan: RowPlan | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(G', X') with G'^T X' == G^T X and fewer rows: X's bitwise-equal rows merged, their gradient rows
    summed. `plan`: row_plan(x), when the caller has it already (q, k and v share their input)."""
    plan = plan or row_plan(x)
    return plan.merge(g), (x if plan.owners.numel() == x.shape[0] else x.index_select(0, plan.owners))


def buffer_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype across micro-batches: the weight's own, but float32 under float16."""
    return torch.float32 if weight_dtype == torch.float16 else weight_dtype


class FullWeightGrads:
    """dL/dW of the frozen base weight under every LoRA layer, over one optimizer step's micro-batches."""

    def __init__(self):
        self.layers: list = []
        self.handles: list = []
        self.sums: dict[int, torch.Tensor] = {}  # buffered: the running dL/dW per layer
        self.buffered = True  # False: one backward per step, the norm is taken right away (GradNormProfiler sets it)
        self.dtype: torch.dtype | None = None  # the buffer's; None: buffer_dtype of each layer's weight
        self.enabled = True  # off while passes that are not the step's run (reward_split's extra passes)
        self._norms: torch.Tensor | None = None  # unbuffered: this step's norms
        self._seen: set[int] = set()
        self._plan: tuple[torch.Tensor, RowPlan] | None = None  # the last input's row plan (q, k, v share one)

    @contextmanager
    def paused(self):
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def attach(self, lora_layers: list) -> None:
        self.layers = lora_layers
        for i, module in enumerate(lora_layers):
            self.handles.append(module.register_forward_hook(self._forward_hook(i)))

    def _forward_hook(self, i: int):
        def hook(module, inputs, output):
            # no graph (generation, evaluation, reference log-probs, a reentrant checkpoint's first pass)
            if not (self.enabled and torch.is_grad_enabled() and isinstance(output, torch.Tensor)
                    and output.requires_grad):
                return None
            return _Tap.apply(output, inputs[0], self, i)
        return hook

    def accumulate(self, i: int, x: torch.Tensor, g: torch.Tensor) -> None:
        """Layer i's dL/dW from one micro-batch: into its buffer, or straight to its norm."""
        x2 = x.reshape(-1, x.shape[-1])
        # the plan is kept with its tensor: while it is alive its memory cannot be reused by another input
        if self._plan is None or not (self._plan[0] is x or (self._plan[0].data_ptr() == x.data_ptr() and
                                                             self._plan[0].shape == x.shape and
                                                             self._plan[0]._version == x._version)):
            self._plan = (x, row_plan(x2))
        g2, x2 = compact_rows(g.reshape(-1, g.shape[-1]), x2, self._plan[1])
        if self.buffered:
            dtype = self.dtype or buffer_dtype(self.layers[i].base_layer.weight.dtype)
            if i not in self.sums:
                self.sums[i] = torch.zeros(g2.shape[1], x2.shape[1], dtype=dtype, device=g2.device)
            self.sums[i].addmm_(g2.T.to(dtype), x2.to(dtype))
            return
        if i in self._seen:
            raise RuntimeError("the full-weight signal saw a second backward in one optimizer step while set for "
                               "one micro-batch (buffered=False); set buffered=True for gradient accumulation")
        self._seen.add(i)
        if self._norms is None:
            self._norms = torch.zeros(len(self.layers), dtype=torch.float32, device=g2.device)
        self._norms[i] = torch.linalg.vector_norm(g2.T @ x2, dtype=torch.float32)

    def norms(self, like: torch.Tensor) -> torch.Tensor:
        """This step's ||dL/dW|| per layer in attach order (0 where no gradient flowed); resets for the next."""
        self._plan = None
        out = torch.zeros(len(self.layers), dtype=torch.float32, device=like.device)
        if not self.buffered:
            if self._norms is not None and self._seen:
                out.copy_(self._norms)
                self._norms.zero_()
            self._seen.clear()
            return out
        have = sorted(self.sums)
        # each rank's dL/dW is of its own micro-batch; DDP averages the LoRA gradients, this does the same
        distributed.all_mean_([self.sums[i] for i in have])
        if have:
            out[have] = torch.stack([torch.linalg.vector_norm(self.sums[i], dtype=torch.float32)
                                     for i in have]).to(like.device)
        self.sums.clear()
        return out

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
